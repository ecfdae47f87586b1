"""The relay's periodic look around: silent nodes are dropped, jobs no node could run fail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay.capacity import Capacity
from talos_gateway.relay.nodes import Close, NodeBook, NodeConn
from talos_gateway.relay.origin import Jobs
from talos_gateway.relay.timing import stop_task

log = logging.getLogger("talos_gateway.relay")


class Sweeper:
    def __init__(
        self,
        settings: Settings,
        book: NodeBook,
        jobs: Jobs,
        capacity: Capacity,
        detach: Callable[[NodeConn, str, Close], None],
        wake: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.book = book
        self.jobs = jobs
        self.capacity = capacity
        self.detach = detach
        self.wake = wake
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._forever(), name="relay-sweeper")

    async def close(self) -> None:
        await stop_task(self._task)

    async def _forever(self) -> None:
        tick = min(1.0, max(0.05, self.settings.node_silence_seconds / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                self.sweep()
            except Exception:  # a bug here must not stop silence detection for good
                log.exception("relay sweep failed")

    def sweep(self) -> None:
        now = time.monotonic()
        silence = self.settings.node_silence_seconds
        for conn in list(self.book.conns.values()):
            if now - conn.last_seen > silence:
                log.warning("node silent; dropping it", extra={"node_id": conn.node_id})
                self.detach(
                    conn, "silent", Close(grpc.StatusCode.UNAVAILABLE, "no message within the silence limit")
                )
        if self.jobs.queued():
            self.fail_orphans(now)
            self.wake()

    def fail_orphans(self, now: float) -> None:
        """Queued jobs that no healthy node in the network could ever run fail after a short grace."""
        for job in self.jobs.queued():
            if self.capacity.can_run(job.size, job.excluded):
                job.orphan_since = None
                continue
            if job.orphan_since is None:
                job.orphan_since = now
            elif now - job.orphan_since >= self.settings.no_node_grace_seconds:
                self.jobs.fail(
                    job,
                    TalosError(
                        "no_capacity", "no render node is available for this job; try again", retry_after=10
                    ),
                    "no_node",
                )
