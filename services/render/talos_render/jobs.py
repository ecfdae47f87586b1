"""What a render job is while the engine holds it: the request, its own denoising state, and
where its progress and result go.

Every job keeps its own scheduler, its own seed-derived initial noise (drawn with its own CPU
generator before it meets any other job) and its own guidance scale, so batching changes which
rows share a UNet pass, never what a job computes from.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from talos_render.previews import ProgressCallback, ProgressDelivery


@dataclass(frozen=True)
class RenderRequest:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    output_format: str = "png"
    preview_every: int = 0
    # webp and jpeg encoder quality, 1 to 100; 0: the default (DEFAULT_QUALITY).
    output_quality: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def cfg(self) -> bool:
        """Classifier-free guidance needs an unconditional row; guidance 1 skips it (as diffusers)."""
        return self.guidance > 1.0

    @property
    def rows(self) -> int:
        return 2 if self.cfg else 1


@dataclass(frozen=True)
class RenderOutput:
    image: bytes
    output_format: str
    width: int
    height: int
    render_seconds: float


class Cancelled(Exception):
    """The job's cancel flag was set; it left the batch after the step in progress."""


@dataclass(frozen=True)
class Rendered:
    """A finished job's pixels (H×W×3 uint8) and the seconds it spent in the denoising loop."""

    pixels: np.ndarray
    loop_seconds: float


@dataclass(eq=False)
class Conditioning:
    """One job's tensors for the UNet, on the device: rows in the order [negative, positive]
    for CFG jobs, [positive] otherwise (diffusers' own order, so a job alone is stock diffusers)."""

    embeds: torch.Tensor  # (rows, tokens, cross_attention_dim)
    pooled: torch.Tensor  # (rows, projection_dim)
    time_ids: torch.Tensor  # (rows, 6)

    def tensors(self) -> list[torch.Tensor]:
        return [self.embeds, self.pooled, self.time_ids]


@dataclass(eq=False)
class Job:
    """A job from submission to its terminal outcome."""

    request: RenderRequest
    cancel: threading.Event
    progress: ProgressDelivery
    preview_every: int
    future: Future[Rendered] = field(default_factory=Future)
    # Unique for the process's life (an id() may come back for a later job).
    serial: int = field(default_factory=itertools.count().__next__)
    # Filled by preparation (text encoding, scheduler, initial noise), off the render thread.
    scheduler: Any = None
    generator: torch.Generator | None = None
    latents: torch.Tensor | None = None
    conditioning: Conditioning | None = None
    # Recorded on the preparation stream once the tensors above are ready (CUDA only).
    ready: Any = None
    # When preparation ended (time.monotonic()); the batch window counts from it.
    queued: float = 0.0
    # Set by the render worker.
    step: int = 0
    started: float = 0.0
    x0: torch.Tensor | None = None

    @property
    def total(self) -> int:
        return self.request.steps

    def mark_started(self) -> None:
        if not self.started:
            self.started = time.perf_counter()

    def tensors(self) -> list[torch.Tensor]:
        """The job's device tensors made on another stream (for ``record_stream``)."""
        out = [] if self.conditioning is None else self.conditioning.tensors()
        if self.latents is not None:
            out.append(self.latents)
        timesteps = getattr(self.scheduler, "timesteps", None)
        if isinstance(timesteps, torch.Tensor):
            out.append(timesteps)
        return out

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


def make_job(
    request: RenderRequest,
    on_progress: ProgressCallback,
    cancel: threading.Event,
    progress_pool: Any,
    preview_every: int,
) -> Job:
    return Job(
        request=request,
        cancel=cancel,
        progress=ProgressDelivery(on_progress, progress_pool),
        preview_every=preview_every,
    )
