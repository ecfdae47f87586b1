"""Live previews and per-job progress, delivered without stalling the render thread.

A preview is a linear latent-to-RGB map of the predicted clean latents, pooled to ~128 px on
the device (a few tiny kernels), copied with ``non_blocking`` into pinned host memory and
JPEG-encoded by a small thread pool. The render thread only launches that work: the wait for
the copy and the encoding happen on the pool, so the GPU is never synchronised by the loop.

Progress of one job is delivered in step order even so: a step without a preview that follows
one whose preview is still being encoded waits behind it in that job's queue.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

# Called after each step of a job: (step, total_steps, preview_jpeg or b""). It must never
# block: it runs on the render thread or a preview thread.
ProgressCallback = Callable[[int, int, bytes], None]


@dataclass(eq=False)
class StagedPreview:
    """A preview on its way to the host: pixels (H×W×3 uint8), ready once ``event`` has passed."""

    pixels: torch.Tensor
    event: Any  # torch.cuda.Event, or None on a CPU
    width: int
    height: int
    size: int

    def jpeg(self) -> bytes:
        if self.event is not None:
            self.event.synchronize()  # a preview thread waits, never the render thread
        image = Image.fromarray(self.pixels.numpy(), "RGB")
        scale = self.size / max(self.width, self.height)
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=70)
        return out.getvalue()


class Previewer:
    """Latents → a small RGB image on the device through a linear map."""

    def __init__(self, latent_rgb: dict[str, Any], device: torch.device, size: int) -> None:
        self.device = device
        self.factors = torch.tensor(latent_rgb["factors"], dtype=torch.float32, device=device)
        self.bias = torch.tensor(latent_rgb["bias"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.size = max(16, size)

    def rgb8(self, latents: torch.Tensor) -> torch.Tensor:
        """(h, w, 3) uint8 on the latents' device, pooled so its longest side is about ``size``."""
        lat = latents[:1].float()
        height, width = lat.shape[-2:]
        factor = max(1, math.ceil(max(height, width) / self.size))
        if factor > 1:
            lat = torch.nn.functional.avg_pool2d(lat, factor, ceil_mode=True)
        rgb = torch.einsum("bchw,cr->brhw", lat, self.factors) + self.bias
        rgb8 = ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
        return rgb8[0].permute(1, 2, 0).contiguous()

    def stage(self, latents: torch.Tensor, width: int, height: int) -> StagedPreview:
        """Launches the map and the copy to the host; returns at once."""
        pixels = self.rgb8(latents)
        event = None
        if pixels.device.type == "cuda":
            host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            pixels = host
        return StagedPreview(pixels=pixels, event=event, width=width, height=height, size=self.size)

    def jpeg(self, latents: torch.Tensor, width: int, height: int) -> bytes:
        """A preview JPEG at once (for measurements; jobs use :meth:`stage`)."""
        return self.stage(latents, width, height).jpeg()


class ProgressDelivery:
    """Delivers one job's progress in step order; previews are finished on ``pool``.

    Only the render thread posts. A step without a preview is delivered inline when nothing of
    the job is queued; otherwise it queues behind the preview being encoded.
    """

    def __init__(self, callback: ProgressCallback, pool: Executor) -> None:
        self._callback = callback
        self._pool = pool
        self._lock = threading.Lock()
        self._queue: deque[tuple[int, int, StagedPreview | None]] = deque()
        self._draining = False
        self._after: Callable[[], None] | None = None
        self._idle = threading.Event()
        self._idle.set()

    def post(self, step: int, total: int, preview: StagedPreview | None) -> None:
        with self._lock:
            inline = not self._draining and preview is None
            if not inline:
                self._queue.append((step, total, preview))
                if self._draining:
                    return
                self._draining = True
                self._idle.clear()
        if inline:
            self._deliver(step, total, b"")
        else:
            self._pool.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._draining = False
                    after, self._after = self._after, None
                    self._idle.set()
                    break
                step, total, preview = self._queue.popleft()
            data = b""
            if preview is not None:
                try:
                    data = preview.jpeg()
                except Exception:  # a broken preview must not lose the step
                    log.exception("preview failed")
            self._deliver(step, total, data)
        if after is not None:
            after()

    def then(self, action: Callable[[], None]) -> None:
        """Runs ``action`` once every step posted so far has been delivered (at once if so)."""
        with self._lock:
            if self._draining:
                self._after = action
                return
        action()

    def _deliver(self, step: int, total: int, preview: bytes) -> None:
        try:
            self._callback(step, total, preview)
        except Exception:  # the callback belongs to the caller; the batch goes on
            log.exception("progress callback failed")

    def wait(self, timeout: float | None = None) -> bool:
        """True once every posted step has been delivered."""
        return self._idle.wait(timeout)
