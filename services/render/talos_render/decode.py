"""The VAE decode of finished jobs, off the render thread (and on CUDA off its stream).

The render worker hands a finished job's latents over with an event recorded after its last
step and goes on with the batch; the decode thread makes its own stream wait for that event,
decodes, copies the uint8 pixels into pinned host memory with ``non_blocking`` and waits for
its own stream only. So the denoising of the jobs still in the batch never waits for a VAE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from talos_render.jobs import Cancelled, Job, Rendered

log = logging.getLogger(__name__)


def latents_to_pixels(vae: Any, latents: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The stock pipeline's un-scaling and decode, then [-1, 1] → (H, W, 3) uint8 on the device."""
    config = vae.config
    latents = latents.to(next(vae.post_quant_conv.parameters()).dtype)
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        channels = latents.shape[1]
        mean_t = torch.tensor(mean).view(1, channels, 1, 1).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(1, channels, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std_t / config.scaling_factor + mean_t
    else:
        latents = latents / config.scaling_factor
    if channels_last:
        latents = latents.contiguous(memory_format=torch.channels_last)
    image = vae.decode(latents, return_dict=False)[0]
    pixels = ((image.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels[0].permute(1, 2, 0).contiguous()


class Decoder:
    """One decode thread (and stream); jobs' results are set from it."""

    def __init__(self, vae: Any, device: torch.device) -> None:
        self.vae = vae
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._decode: Callable[[torch.Tensor], torch.Tensor] = self._eager

    def _eager(self, latents: torch.Tensor) -> torch.Tensor:
        return latents_to_pixels(self.vae, latents, channels_last=self.cuda)

    def use(self, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._decode = decode

    def eager(self) -> None:
        self._decode = self._eager

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Runs ``fn`` on the decode thread (compiled decoders stay on the thread that runs them)."""
        return self._pool.submit(self._on_stream, fn)

    def _on_stream(self, fn: Callable[[], Any]) -> Any:
        if self.stream is None:
            return fn()
        with torch.cuda.stream(self.stream):
            return fn()

    def pixels(self, latents: torch.Tensor) -> np.ndarray:
        """Decode thread only: latents (already ordered on this thread's stream) → host pixels."""
        with torch.inference_mode():
            pixels = self._decode(latents)
            if not self.cuda:
                return np.ascontiguousarray(pixels.numpy())
            host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        event.synchronize()
        return host.numpy().copy()

    def finish(self, job: Job, latents: torch.Tensor, loop_done: Any, loop_seconds: float | None) -> None:
        """Hands a finished job over (render thread; returns at once). On CUDA ``loop_done`` is
        an event recorded after the job's last step; on a CPU the loop time is already known."""
        self._pool.submit(self._finish, job, latents, loop_done, loop_seconds)

    def _finish(self, job: Job, latents: torch.Tensor, loop_done: Any, loop_seconds: float | None) -> None:
        try:
            if self.stream is not None:
                loop_done.synchronize()  # the job's last step has run: its loop time ends here
                loop_seconds = time.perf_counter() - job.started
                # The latents come from the render stream; keep their memory until we are done.
                latents.record_stream(self.stream)
                with torch.cuda.stream(self.stream):
                    self.stream.wait_event(loop_done)
                    pixels = self.pixels(latents)
            else:
                pixels = self.pixels(latents)
        except BaseException as exc:  # the job's caller learns of it; the thread goes on
            error = exc  # ``exc`` itself is unbound when the except block ends
            job.progress.then(lambda: job.fail(error))
            return
        rendered = Rendered(pixels=pixels, loop_seconds=float(loop_seconds or 0.0))
        job.progress.then(lambda: settle(job, rendered))


def settle(job: Job, rendered: Rendered) -> None:
    """The job's outcome, once its progress has all been delivered (a cancel that came after
    the last step still wins: the caller asked for it)."""
    if job.cancel.is_set():
        job.fail(Cancelled())
    elif not job.future.done():
        job.future.set_result(rendered)
