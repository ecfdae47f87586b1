"""One render worker per device: jobs join and leave a running batch between steps.

Every iteration advances each active job by one step. Jobs of the same size share one UNet
pass (their rows concatenated: two per CFG job, [negative, positive]; one per guidance-1 job);
jobs of different sizes take turns, a pass per size per iteration, so every job keeps moving.
Each job brings its own scheduler and timesteps, so jobs with different step counts,
guidance scales and starting times batch together: the UNet takes one timestep per row, and
guidance is applied per job to its own rows.

When the worker is idle, the first prepared job waits up to ``window`` seconds for others to
start with it (so a burst starts as one batch); later jobs join at the next step. A cancelled
job leaves after the step in progress; the others go on. A finished job's latents go to the
decode thread with an event, and the loop goes on without waiting for the VAE.

The render thread never synchronises the GPU: progress is posted without waiting, previews are
copied without blocking and finished elsewhere, and the preparation of new jobs (which copies
from the host) runs on its own thread and stream.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from talos_render.decode import Decoder
from talos_render.jobs import Cancelled, Job
from talos_render.prepare import Preparer
from talos_render.previews import Previewer

log = logging.getLogger(__name__)

UNetCall = Callable[[Any, Any, Any, Any, Any], torch.Tensor]


class BatchWorker:
    def __init__(
        self,
        unet: UNetCall,
        preparer: Preparer,
        decoder: Decoder,
        previewer: Previewer,
        *,
        device: torch.device,
        max_batch: int,
        window_seconds: float,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self.unet = unet
        self.preparer = preparer
        self.decoder = decoder
        self.previewer = previewer
        self.device = device
        self.max_batch = max(1, max_batch)
        self.window = max(0.0, window_seconds) if self.max_batch > 1 else 0.0
        self.on_step = on_step
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._cond = threading.Condition()
        self._ready: deque[Job] = deque()
        self._tasks: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._active: list[Job] = []
        self._stopping = False
        # Per size: the serials of the jobs in the last pass and their concatenated conditioning.
        self._compositions: dict[tuple[int, int], tuple[tuple[int, ...], list[torch.Tensor]]] = {}
        self._prepare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    # -- any thread ------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if job.cancel.is_set():
            job.fail(Cancelled())
            return
        self._prepare_pool.submit(self._prepare, job)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Runs ``fn`` on the render thread, between batches (warm-up, measurements)."""
        future: Future[Any] = Future()
        with self._cond:
            self._tasks.append((fn, future))
            self._cond.notify_all()
        return future

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._prepare_pool.shutdown(wait=True, cancel_futures=True)
        self._thread.join(timeout=60)

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._active)

    def _prepare(self, job: Job) -> None:
        try:
            if job.cancel.is_set():
                raise Cancelled()
            self.preparer.prepare(job)
        except BaseException as exc:
            job.fail(exc)
            return
        job.queued = time.monotonic()
        with self._cond:
            self._ready.append(job)
            self._cond.notify_all()

    # -- the render thread -------------------------------------------------------------------------
    def _run(self) -> None:
        stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with stream, torch.inference_mode():
            while True:
                task, joiners = self._next_work()
                if task is not None:
                    fn, future = task
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn())
                        except BaseException as exc:
                            future.set_exception(exc)
                    continue
                if joiners is None:
                    break
                self._drop_cancelled_waiting()
                for job in joiners:
                    self._join(job)
                if self._active:
                    self._iteration()
        self._fail_everything()

    def _next_work(self) -> tuple[tuple[Callable[[], Any], Future[Any]] | None, list[Job] | None]:
        """A task to run (only while no job is active), else jobs to join (maybe none); None
        for both once stopping."""
        with self._cond:
            while not (self._active or self._ready or self._tasks or self._stopping):
                self._cond.wait()
            if self._stopping:
                return None, None
            if self._tasks and not self._active:
                return self._tasks.popleft(), []
            if not self._active and self._ready and self.window > 0:
                # A job waits at most one window for companions, counted from its readiness
                # (one that queued behind a full batch has waited long enough).
                deadline = self._ready[0].queued + self.window
                while len(self._ready) < self.max_batch and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            joiners: list[Job] = []
            while self._ready and len(self._active) + len(joiners) < self.max_batch:
                joiners.append(self._ready.popleft())
            return None, joiners

    def _drop_cancelled_waiting(self) -> None:
        """A job cancelled while it waits for a place is answered now, not when one opens."""
        with self._cond:
            cancelled = [job for job in self._ready if job.cancel.is_set()]
            for job in cancelled:
                self._ready.remove(job)
        for job in cancelled:
            job.fail(Cancelled())

    def _join(self, job: Job) -> None:
        if job.cancel.is_set():
            job.fail(Cancelled())
            return
        if self.stream is not None and job.ready is not None:
            self.stream.wait_event(job.ready)
            for tensor in job.tensors():
                # Made on the preparation stream, read on this one: keep them until we are done.
                tensor.record_stream(self.stream)
        with self._cond:
            self._active.append(job)

    def _iteration(self) -> None:
        for jobs in self._groups():
            try:
                self._step(jobs)
            except BaseException as exc:
                log.exception("a batched step failed", extra={"jobs": len(jobs)})
                for job in jobs:
                    self._leave(job)
                    job.fail(exc)
                continue
            for job in jobs:
                if job.cancel.is_set():
                    self._leave(job)
                    job.progress.then(functools.partial(job.fail, Cancelled()))
                elif job.step >= job.total:
                    self._leave(job)
                    self._finish(job)

    def _groups(self) -> Iterator[list[Job]]:
        groups: dict[tuple[int, int], list[Job]] = {}
        for job in self._active:
            groups.setdefault(job.request.size, []).append(job)
        yield from groups.values()

    def _leave(self, job: Job) -> None:
        with self._cond, contextlib.suppress(ValueError):
            self._active.remove(job)

    def _conditioning(self, jobs: list[Job]) -> list[torch.Tensor]:
        """The batch's embeddings, pooled embeddings and time ids, rebuilt only when the
        batch's membership changes."""
        size = jobs[0].request.size
        key = tuple(job.serial for job in jobs)
        cached = self._compositions.get(size)
        if cached is not None and cached[0] == key:
            return cached[1]
        parts = [job.conditioning.tensors() for job in jobs if job.conditioning is not None]
        if len(parts) == 1:
            tensors = parts[0]
        else:
            tensors = [torch.cat([part[i] for part in parts]) for i in range(3)]
        self._compositions[size] = (key, tensors)
        return tensors

    def _step(self, jobs: list[Job]) -> None:
        samples: list[torch.Tensor] = []
        timesteps: list[torch.Tensor] = []
        for job in jobs:
            job.mark_started()
            scheduler = job.scheduler
            t = scheduler.timesteps[job.step]
            latents = job.latents
            assert latents is not None
            rows = job.request.rows
            scaled = scheduler.scale_model_input(torch.cat([latents] * rows) if rows > 1 else latents, t)
            samples.append(scaled)
            timesteps.append(t.reshape(1).expand(rows))
        sample = samples[0] if len(samples) == 1 else torch.cat(samples)
        embeds, pooled, time_ids = self._conditioning(jobs)
        out = self.unet(sample, torch.cat(timesteps), embeds, pooled, time_ids)
        offset = 0
        for job in jobs:
            request = job.request
            noise = out[offset : offset + request.rows]
            offset += request.rows
            if request.cfg:
                uncond, text = noise.chunk(2)
                noise = uncond + request.guidance * (text - uncond)
            t = job.scheduler.timesteps[job.step]
            latents, x0 = job.scheduler.step(
                noise, t, job.latents, generator=job.generator, return_dict=False
            )
            job.latents = latents
            job.x0 = x0
            job.step += 1
            self._progress(job)

    def _progress(self, job: Job) -> None:
        step, total = job.step, job.total
        preview = None
        every = job.preview_every
        if every and step % every == 0 and step < total:
            source = job.x0 if job.x0 is not None else job.latents
            assert source is not None
            preview = self.previewer.stage(source, job.request.width, job.request.height)
        if self.on_step is not None:
            self.on_step()
        job.progress.post(step, total, preview)

    def _finish(self, job: Job) -> None:
        latents = job.latents
        assert latents is not None
        job.latents = job.x0 = None
        if self.stream is not None:
            done = torch.cuda.Event()
            done.record(self.stream)
            self.decoder.finish(job, latents, done, None)
        else:
            self.decoder.finish(job, latents, None, time.perf_counter() - job.started)

    def _fail_everything(self) -> None:
        with self._cond:
            waiting = list(self._ready) + self._active
            self._ready.clear()
            self._active.clear()
            tasks = list(self._tasks)
            self._tasks.clear()
        for job in waiting:
            job.fail(Cancelled())
        for _fn, future in tasks:
            future.cancel()
