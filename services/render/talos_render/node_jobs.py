"""The jobs a node runs: which it takes, running each through the engine, cancels.

The streams themselves (dialling, Hello, heartbeats, reconnects) are :mod:`talos_render.link`'s;
this module only sees a job arrive on a stream and answers on that stream's outbound queue.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from talos.relay.v1 import relay_pb2
from talos_render.config import Settings, parse_size
from talos_render.engine import FORMATS, Cancelled, Engine, RenderRequest
from talos_render.metrics import Metrics
from talos_render.outbound import JobSlot

if TYPE_CHECKING:
    from talos_render.link import Stream

log = logging.getLogger("talos_render.link")

# Prompt and negative prompt together; the gateway caps each at 2,000 characters after a preset.
MAX_PROMPT_CHARS = 20_000


@dataclass(eq=False)
class ActiveJob:
    job_id: str
    stream: Stream
    slot: JobSlot
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "cancelled"
    started: bool = False
    task: asyncio.Task[None] | None = None


class NodeJobs:
    """The jobs in hand, at most ``concurrency`` at once (the engine batches them)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: Metrics,
        concurrency: int,
        notify: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.concurrency = concurrency
        self.notify = notify
        self.sizes = [parse_size(s) for s in settings.sizes]
        self.active: dict[str, ActiveJob] = {}
        self.draining = False

    def holds(self, stream: Stream) -> bool:
        return any(job.stream is stream for job in self.active.values())

    def on(self, stream: Stream) -> list[ActiveJob]:
        return [job for job in self.active.values() if job.stream is stream]

    def refusal(self, job: relay_pb2.RenderJob) -> str | None:
        """Why the node will not take ``job``: "unsupported" (never here) before "busy" (not now)."""
        if not job.job_id:
            return "unsupported"
        if (job.width, job.height) not in self.sizes:
            return "unsupported"
        if not 1 <= job.steps <= self.settings.max_steps:
            return "unsupported"
        if not math.isfinite(job.guidance) or not 1.0 <= job.guidance <= 30.0:
            return "unsupported"
        if (job.output_format.lower() or "png") not in FORMATS:
            return "unsupported"
        if len(job.prompt) + len(job.negative_prompt) > MAX_PROMPT_CHARS:
            return "unsupported"
        if self.draining or job.job_id in self.active or len(self.active) >= self.concurrency:
            return "busy"
        return None

    def on_job(self, stream: Stream, job: relay_pb2.RenderJob) -> None:
        reason = self.refusal(job)
        if reason is not None:
            stream.outbound.send(
                relay_pb2.NodeMessage(rejected=relay_pb2.JobRejected(job_id=job.job_id, reason=reason))
            )
            self.metrics.jobs.labels(f"rejected_{reason}").inc()
            log.info("job rejected", extra={"job_id": job.job_id, "reason": reason, "relay": stream.target})
            return
        request = RenderRequest(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            width=job.width,
            height=job.height,
            steps=job.steps,
            guidance=job.guidance,
            seed=job.seed,
            output_format=job.output_format.lower() or "png",
            preview_every=job.preview_every,
            output_quality=min(100, job.output_quality),
        )
        active = ActiveJob(job_id=job.job_id, stream=stream, slot=stream.outbound.job(job.job_id))
        self.active[job.job_id] = active
        self.metrics.active_jobs.set(len(self.active))
        self.metrics.queue.inc()
        stream.outbound.send(relay_pb2.NodeMessage(accepted=relay_pb2.JobAccepted(job_id=job.job_id)))
        log.info(
            "job accepted",
            extra={
                "job_id": job.job_id,
                "relay": stream.target,
                "size": f"{job.width}x{job.height}",
                "steps": job.steps,
            },
        )
        active.task = asyncio.create_task(self._run_job(active, request))

    def on_cancel(self, stream: Stream, job_id: str) -> None:
        active = self.active.get(job_id)
        if active is None or active.stream is not stream:
            log.info("cancel for a job not running here", extra={"job_id": job_id})
            return
        active.cancel_reason = "cancelled"
        active.cancel.set()
        log.info("job cancel requested", extra={"job_id": job_id})

    async def _run_job(self, active: ActiveJob, request: RenderRequest) -> None:
        started = time.perf_counter()
        outcome = "completed"
        slot = active.slot
        metrics = self.metrics

        def on_progress(step: int, total: int, preview: bytes) -> None:
            if not active.started:
                active.started = True
                metrics.queue.dec()
            slot.offer_progress(step, total, preview)

        try:
            output = await self.engine.render(request, on_progress, active.cancel)
            result = relay_pb2.JobResult(
                job_id=active.job_id,
                image=output.image,
                output_format=output.output_format,
                width=output.width,
                height=output.height,
                render_seconds=output.render_seconds,
            )
            slot.finish(relay_pb2.NodeMessage(result=result))
            if output.render_seconds > 0:
                metrics.steps_per_second.set(request.steps / output.render_seconds)
        except Cancelled:
            outcome = active.cancel_reason
        except torch.OutOfMemoryError:
            outcome = "out_of_memory"
            log.error("out of device memory", extra={"job_id": active.job_id})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            outcome = "error"
            log.exception("render failed", extra={"job_id": active.job_id})
        finally:
            if outcome != "completed":
                failed = relay_pb2.JobFailed(job_id=active.job_id, reason=outcome)
                slot.finish(relay_pb2.NodeMessage(failed=failed))
            if not active.started:
                metrics.queue.dec()
            self.active.pop(active.job_id, None)
            seconds = time.perf_counter() - started
            metrics.jobs.labels(outcome).inc()
            metrics.job_seconds.observe(seconds)
            metrics.active_jobs.set(len(self.active))
            log.info(
                "job finished",
                extra={
                    "job_id": active.job_id,
                    "outcome": outcome,
                    "seconds": round(seconds, 3),
                    "coalesced_progress": slot.coalesced,
                },
            )
            self.notify()
