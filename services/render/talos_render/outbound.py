"""What a node sends up one relay stream, with back-pressure that never stalls the GPU.

Control messages (Hello, JobAccepted, JobRejected, Heartbeat) and each job's terminal message
(JobResult or JobFailed) are queued and always sent, in order. Progress is different: each job
has one slot holding its latest unsent JobProgress, written from the render thread without
waiting; a newer step replaces an older one (keeping the newest preview), so a slow stream
sees fewer progress messages instead of slowing the denoising loop. A job's pending progress
always goes out before its terminal message.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator

from talos.relay.v1 import relay_pb2


class JobSlot:
    """One job's coalescing progress slot and its terminal message."""

    def __init__(self, outbound: Outbound, job_id: str) -> None:
        self.job_id = job_id
        self._outbound = outbound
        self._lock = threading.Lock()
        self._progress: relay_pb2.JobProgress | None = None
        self._terminal: relay_pb2.NodeMessage | None = None
        self.coalesced = 0

    def offer_progress(self, step: int, total: int, preview: bytes) -> None:
        """Thread-safe and non-blocking: called by the render thread after every step."""
        with self._lock:
            previous = self._progress
            if previous is not None:
                self.coalesced += 1
                if not preview:
                    preview = previous.preview_jpeg  # keep the newest preview not yet sent
            self._progress = relay_pb2.JobProgress(
                job_id=self.job_id, step=step, total_steps=total, preview_jpeg=preview
            )
        self._outbound.wake_threadsafe()

    def finish(self, message: relay_pb2.NodeMessage) -> None:
        """The job's one terminal message (JobResult or JobFailed); never dropped or coalesced."""
        with self._lock:
            if self._terminal is None:
                self._terminal = message
        self._outbound.wake_threadsafe()

    def take(self) -> tuple[relay_pb2.NodeMessage | None, bool]:
        """(next message, slot finished)."""
        with self._lock:
            if self._progress is not None:
                progress, self._progress = self._progress, None
                return relay_pb2.NodeMessage(progress=progress), False
            if self._terminal is not None:
                return self._terminal, True
            return None, False

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._terminal is not None

    def has_pending(self) -> bool:
        with self._lock:
            return self._progress is not None or self._terminal is not None


class Outbound:
    """The request side of one Connect stream, consumed by gRPC as an async iterator."""

    def __init__(self, hello: relay_pb2.Hello, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._control: deque[relay_pb2.NodeMessage] = deque([relay_pb2.NodeMessage(hello=hello)])
        self._jobs: dict[str, JobSlot] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._wake_pending = threading.Event()
        self._closing = False
        self.sent = 0

    def wake_threadsafe(self) -> None:
        if not self._wake_pending.is_set():
            self._wake_pending.set()
            try:
                self._loop.call_soon_threadsafe(self._wake_now)
            except RuntimeError:  # the loop is closed: the stream is gone anyway
                pass

    def _wake_now(self) -> None:
        self._wake_pending.clear()
        self._wake.set()

    def send(self, message: relay_pb2.NodeMessage) -> None:
        """Queues a control message (call from the event loop)."""
        self._control.append(message)
        self._wake.set()

    def job(self, job_id: str) -> JobSlot:
        slot = JobSlot(self, job_id)
        self._jobs[job_id] = slot
        return slot

    def close(self) -> None:
        """Ends the request stream once everything queued has been sent."""
        self._closing = True
        self._wake.set()

    def _next(self) -> relay_pb2.NodeMessage | None:
        if self._control:
            return self._control.popleft()
        for job_id, slot in list(self._jobs.items()):
            message, done = slot.take()
            if done:
                del self._jobs[job_id]
            if message is not None:
                return message
        return None

    def idle(self) -> bool:
        """Nothing queued: every message handed to gRPC so far."""
        return not self._next_ready()

    async def messages(self) -> AsyncIterator[relay_pb2.NodeMessage]:
        while True:
            message = self._next()
            if message is not None:
                self.sent += 1
                yield message
                continue
            if self._closing:
                return
            self._wake.clear()
            if self._next_ready():
                continue
            self._drained.set()
            await self._wake.wait()
            self._drained.clear()

    async def wait_idle(self) -> None:
        """Returns once gRPC has taken every queued message (the stream may still be open)."""
        while not self.idle():
            self._drained.clear()
            await self._drained.wait()

    def _next_ready(self) -> bool:
        return bool(self._control) or any(slot.has_pending() for slot in self._jobs.values())
