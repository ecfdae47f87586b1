"""How long one image may take: the one formula for an attempt's limit and a job's deadline.

An attempt (one job on one node) may take a base time plus a time per step per megapixel;
the pipeline's deadline for the whole job covers the wait in the queue, every attempt the
relay may make, and the calls to billing and moderation around the render.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger("talos_gateway.relay")

# 1024x1024 is the reference size for a node's seconds per step.
REFERENCE_PIXELS = 1024 * 1024


class TimingSettings(Protocol):
    @property
    def job_timeout_base_seconds(self) -> float: ...
    @property
    def job_timeout_per_step_megapixel_seconds(self) -> float: ...
    @property
    def queue_timeout_seconds(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def downstream_timeout_seconds(self) -> float: ...


def work_units(width: int, height: int, steps: int) -> float:
    """Steps × size relative to 1024²: a node's seconds per step times this is the render time."""
    return steps * width * height / REFERENCE_PIXELS


def attempt_time_limit(settings: TimingSettings, width: int, height: int, steps: int) -> float:
    """Seconds one node may take for one image, from the RenderJob sent to its result."""
    megapixels = width * height / 1_000_000
    return (
        settings.job_timeout_base_seconds
        + settings.job_timeout_per_step_megapixel_seconds * steps * megapixels
    )


def job_deadline(settings: TimingSettings, width: int, height: int, steps: int) -> float:
    """Seconds the pipeline gives one job: queue wait, every attempt, and the calls around them."""
    return (
        settings.queue_timeout_seconds
        + settings.max_attempts * attempt_time_limit(settings, width, height, steps)
        + 4 * settings.downstream_timeout_seconds
    )


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Waits for ``event`` at most ``seconds``; True when it was set.

    Unlike ``asyncio.wait_for`` on Python 3.11, a cancel that arrives as the event is set is
    never swallowed (a background loop waiting this way always stops when cancelled).
    """
    if seconds is None:
        await event.wait()
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancels a background task and waits for its end, cancelling again while it lingers.

    A library call that swallows a cancel (a race in ``asyncio.wait_for`` on Python 3.11) must
    not keep the relay from closing.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.warning("a background task had failed", extra={"task": task.get_name()})
