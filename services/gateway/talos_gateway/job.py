"""One job in memory: its images, the latest event of each, and who may still receive them.

A job is one request: one prompt, ``n`` images. Each image has its own hold, render, events
and end. Watchers follow the job; a reconnect replays each image's latest queued or started
event, its latest progress and its end. An image's bytes leave memory once a client has
received them (and nobody else is reading), or when the job's time is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import Enum

from talos.api.v1.contract import Generation
from talos_common.errors import TalosError
from talos_gateway.auth import Principal
from talos_gateway.relay.contract import RenderSpec


@dataclass(frozen=True)
class QueuedEvent:
    index: int
    position: int
    eta_seconds: float


@dataclass(frozen=True)
class StartedEvent:
    index: int


@dataclass(frozen=True)
class ProgressEvent:
    index: int
    step: int
    total_steps: int
    preview_jpeg: bytes = b""
    preview_withheld: bool = False


@dataclass(frozen=True)
class CompletedEvent:
    index: int
    data: bytes
    output_format: str
    width: int
    height: int
    seed: int
    credits_charged: int
    balance: int  # spendable after the charge: allowance remaining + balance


@dataclass(frozen=True)
class FailedEvent:
    index: int
    code: str
    message: str
    seed: int


JobEvent = QueuedEvent | StartedEvent | ProgressEvent | CompletedEvent | FailedEvent
TERMINAL = (CompletedEvent, FailedEvent)


class Slot(Enum):
    """Which of an image's latest events an event replaces on a reconnect."""

    WAITING = "waiting"  # queued, then started
    PROGRESS = "progress"
    END = "end"


_SLOT = {
    QueuedEvent: Slot.WAITING,
    StartedEvent: Slot.WAITING,
    ProgressEvent: Slot.PROGRESS,
    CompletedEvent: Slot.END,
    FailedEvent: Slot.END,
}


@dataclass(eq=False)
class Image:
    """One image of a job: its seed, its hold in billing, its render and whether it reached a client."""

    index: int
    seed: int
    hold_id: str
    spec: RenderSpec | None  # dropped once the node has rendered it
    task: asyncio.Task[None] | None = None
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    render_seconds: float = 0.0


def hold_id(job_id: str, index: int) -> str:
    """The id billing holds one image's credits under."""
    return f"{job_id}.{index}"


class Job:
    """A job's state in memory: its images, their latest events, and who may see them."""

    def __init__(
        self,
        job_id: str,
        principal: Principal,
        generation: Generation,
        seeds: list[int],
        specs: list[RenderSpec],
    ) -> None:
        self.id = job_id
        self.account_id = principal.account_id
        self.key_hash = principal.key_hash
        self.created = int(time.time())
        # What the responses echo; the prompt itself stays only in each image's spec.
        self.size = generation.size
        self.width, self.height = generation.width, generation.height
        self.output_format = generation.output_format
        self.nsfw = generation.nsfw
        self.steps = generation.steps
        self.quality = generation.quality
        self.background = generation.background
        self.images = [
            Image(index, seed, hold_id(job_id, index), spec)
            for index, (seed, spec) in enumerate(zip(seeds, specs, strict=True))
        ]
        self.spendable = 0  # what billing last said the account can spend
        self.cancel_reason: str | None = None
        self.connection_bound = False  # created by a call that owns it (Generate, non-202 HTTP)
        self.bound = 0  # connections whose going away cancels the job
        self.ended = asyncio.Event()  # every image has its end event
        self.ended_at: float | None = None
        self.accepted_at = time.perf_counter()
        self.idempotency_index: tuple[str, str] | None = None
        self._slots: dict[tuple[int, Slot], tuple[int, JobEvent]] = {}
        self._seq = 0
        self._changed = asyncio.Event()
        self._watchers = 0

    @property
    def n(self) -> int:
        return len(self.images)

    def cancel(self, reason: str) -> None:
        """Asks every running image to stop (once); each releases its hold and reports it."""
        if self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        for image in self.images:
            if image.task is not None and not image.task.done():
                image.task.cancel()

    # -- events --
    def publish(self, event: JobEvent) -> None:
        key = (event.index, _SLOT[type(event)])
        if (event.index, Slot.END) in self._slots and not isinstance(event, TERMINAL):
            return  # nothing follows an image's end
        self._seq += 1
        self._slots[key] = (self._seq, event)
        if isinstance(event, TERMINAL):
            self._slots.pop((event.index, Slot.PROGRESS), None)
            if all((image.index, Slot.END) in self._slots for image in self.images):
                self.ended_at = time.monotonic()
                self.ended.set()
        self._changed.set()
        self._changed = asyncio.Event()

    def end_of(self, index: int) -> CompletedEvent | FailedEvent | None:
        entry = self._slots.get((index, Slot.END))
        return entry[1] if entry is not None else None  # type: ignore[return-value]

    @property
    def done(self) -> bool:
        return self.ended.is_set()

    def ends(self) -> list[CompletedEvent | FailedEvent]:
        """Each image's end, in image order (only once the job is done)."""
        return [end for image in self.images if (end := self.end_of(image.index)) is not None]

    @property
    def fully_delivered(self) -> bool:
        """Every image ended, some completed, and each completed one reached a client.

        A job whose images all failed keeps replaying its failures until its record expires.
        """
        completed = [image for image in self.images if isinstance(self.end_of(image.index), CompletedEvent)]
        return self.done and bool(completed) and all(image.delivered.is_set() for image in completed)

    def _events_after(self, seq: int) -> list[tuple[int, JobEvent]]:
        return sorted((entry for entry in self._slots.values() if entry[0] > seq), key=lambda e: e[0])

    async def _wait_change(self, seq: int, wait_seconds: float | None) -> bool:
        if self._seq > seq:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), wait_seconds)
        except TimeoutError:
            return False
        return True

    async def follow(self, heartbeat: float | None = None) -> AsyncIterator[JobEvent | None]:
        """The current state, then every change until every image has ended; None on a quiet heartbeat.

        An image a client already received is not replayed (its bytes are not kept).
        """
        if self.fully_delivered:
            raise TalosError("not_found", "this job's images were already delivered; results are not kept")
        self._watchers += 1
        try:
            seq = 0
            ended: set[int] = set()
            while len(ended) < self.n:
                pending = self._events_after(seq)
                for entry_seq, event in pending:
                    seq = entry_seq
                    if isinstance(event, TERMINAL):
                        ended.add(event.index)
                        if isinstance(event, CompletedEvent) and not event.data:
                            continue  # delivered to another watcher and dropped
                    yield event
                if len(ended) == self.n:
                    return
                if not pending and not await self._wait_change(seq, heartbeat):
                    yield None
        finally:
            self._watchers -= 1
            if self._watchers == 0:
                self._drop_delivered()

    def mark_delivered(self, index: int) -> None:
        """A client received this image: it gets charged, and its bytes go once nobody is reading."""
        if isinstance(self.end_of(index), CompletedEvent):
            self.images[index].delivered.set()
            if self._watchers == 0:
                self._drop_delivered()

    def withdraw(self, index: int, event: FailedEvent) -> None:
        """A completed image nobody received was refunded: its end becomes that failure."""
        entry = self._slots.get((index, Slot.END))
        if entry is not None and isinstance(entry[1], CompletedEvent):
            self._seq += 1
            self._slots[(index, Slot.END)] = (self._seq, event)
            self._changed.set()
            self._changed = asyncio.Event()

    def _drop_delivered(self) -> None:
        for image in self.images:
            entry = self._slots.get((image.index, Slot.END))
            if image.delivered.is_set() and entry is not None and isinstance(entry[1], CompletedEvent):
                self._slots[(image.index, Slot.END)] = (entry[0], replace(entry[1], data=b""))

    def drop_content(self) -> None:
        """At the end of the job's time: prompts and images go, whoever still holds the job."""
        for image in self.images:
            image.spec = None
            entry = self._slots.get((image.index, Slot.END))
            if entry is not None and isinstance(entry[1], CompletedEvent) and entry[1].data:
                self._slots[(image.index, Slot.END)] = (entry[0], replace(entry[1], data=b""))
        for index in range(self.n):
            self._slots.pop((index, Slot.PROGRESS), None)
