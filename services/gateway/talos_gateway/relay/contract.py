"""What the gateway's job pipeline may ask of the relay, and what it gets back.

The pipeline calls :meth:`RelayPort.admit` before it reserves credits (so a request with no
capacity is refused with nothing charged), then iterates :meth:`RelayPort.run`. Closing the
iterator early (the client cancelled or went away) makes the relay send a cancel to the node.
Failures are raised as :class:`talos_common.errors.TalosError` (``no_capacity``,
``timeout``, ``internal``) after the relay has used up its retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RenderSpec:
    """One image as a node renders it: prompts already expanded by the style preset."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    output_format: str  # png, webp or jpeg
    output_quality: int = 0  # webp and jpeg encoder quality, 1 to 100; 0: the node's default


@dataclass(frozen=True)
class Queued:
    """No node is free; the job waits."""

    position: int  # 1-based
    eta_seconds: float


@dataclass(frozen=True)
class Started:
    """A node accepted the job."""

    node_id: str


@dataclass(frozen=True)
class Progress:
    """A denoising step finished."""

    step: int
    total_steps: int
    preview_jpeg: bytes  # empty on steps without a preview


@dataclass(frozen=True)
class Finished:
    """A validated image: decoded, of the requested size and format, under the size cap."""

    image: bytes
    width: int
    height: int
    output_format: str
    node_id: str
    render_seconds: float


RelayEvent = Queued | Started | Progress | Finished


class RelayPort(Protocol):
    def admit(self, account_id: str) -> None:
        """Raises TalosError('no_capacity', retry_after=...) when the job cannot be queued."""

    def run(self, job_id: str, account_id: str, spec: RenderSpec) -> AsyncIterator[RelayEvent]:
        """Queues, dispatches and retries the job; the last event is always Finished."""
        ...
