"""Choosing a node for a job: the idle node expected to finish soonest, one it has not failed on.

Nodes with a free slot sit in a heap keyed by their measured seconds per step, slowed by the
jobs they already run; an entry goes stale when its node changes (its version moves on) and is
skipped then, so re-filing a node is O(log n) and picking one is too.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Set
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from talos_gateway.relay.nodes import NodeConn


class Placeable(Protocol):
    """What placement needs to know of a job waiting for a node."""

    @property
    def job_id(self) -> str: ...
    @property
    def size(self) -> tuple[int, int]: ...
    @property
    def excluded(self) -> Collection[str]: ...  # nodes that refused it for good
    @property
    def avoid(self) -> Collection[str]: ...  # nodes it failed on (used only when no other can)


Entry = tuple[float, int, int, "NodeConn"]


def node_key(conn: NodeConn) -> float:
    # Expected seconds per step at 1024², slowed by the jobs it already runs.
    return conn.record.ewma_sps * (1 + len(conn.attempts))


class Placement:
    def __init__(self, healthy: Set[NodeConn]) -> None:
        self.healthy = healthy
        self.available: set[NodeConn] = set()
        self._heap: list[Entry] = []
        self._seq = itertools.count()

    def file(self, conn: NodeConn, available: bool, connected: int) -> None:
        if not available:
            self.available.discard(conn)
            return
        self.available.add(conn)
        heapq.heappush(self._heap, (node_key(conn), next(self._seq), conn.version, conn))
        if len(self._heap) > 4 * connected + 64:
            self._compact()

    def discard(self, conn: NodeConn) -> None:
        self.available.discard(conn)

    def _compact(self) -> None:
        self._heap = [(node_key(c), next(self._seq), c.version, c) for c in self.available if not c.closed]
        heapq.heapify(self._heap)

    def fits(self, conn: NodeConn, job: Placeable) -> bool:
        return (
            conn in self.available
            and conn.node_id not in job.excluded
            and job.size in conn.info.sizes
            and job.job_id not in conn.attempts
        )

    def pick(self, job: Placeable) -> NodeConn | None:
        """The available node expected to finish soonest, preferring nodes the job has not failed on."""
        heap = self._heap
        skipped: list[Entry] = []
        fallback: Entry | None = None
        chosen: NodeConn | None = None
        while heap:
            entry = heapq.heappop(heap)
            conn = entry[3]
            if entry[2] != conn.version or conn not in self.available:
                continue  # stale
            if not self.fits(conn, job):
                skipped.append(entry)
                continue
            if conn.node_id in job.avoid:
                if fallback is None:
                    fallback = entry
                else:
                    skipped.append(entry)
                continue
            chosen = conn  # the dispatch re-files it
            break
        if chosen is None and fallback is not None:
            if self.untried_candidate_exists(job):
                skipped.append(fallback)
            else:
                chosen = fallback[3]
        elif fallback is not None:
            skipped.append(fallback)
        for entry in skipped:
            heapq.heappush(heap, entry)
        return chosen

    def untried_candidate_exists(self, job: Placeable) -> bool:
        """A healthy node (maybe busy) that this job has not failed on and could run it."""
        for conn in self.healthy:
            if (
                conn.node_id not in job.avoid
                and conn.node_id not in job.excluded
                and job.size in conn.info.sizes
            ):
                return True
        return False

    def best(self, limit: int) -> list[NodeConn]:
        """Up to ``limit`` available nodes, best first (what this replica offers the network queue)."""
        return heapq.nsmallest(limit, (c for c in self.available if not c.closed), key=node_key)
