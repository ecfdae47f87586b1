"""What the whole network can run: this replica's nodes as they are, the others' from the registry.

Admission, ``/readyz``, queue positions and ETAs, and the check for jobs no node could ever run
all read it. Other replicas' nodes come from the last view of the network (refreshed about once
a second, and at every position update), so they may lag a little; this replica's own are live.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Collection

from talos_gateway.relay.nodes import SPS_DEFAULT, NodeBook
from talos_gateway.relay.queue import NetNode


class Capacity:
    def __init__(self, book: NodeBook) -> None:
        self.book = book
        self.remote: list[NetNode] = []

    def update(self, nodes: list[NetNode]) -> None:
        self.remote = nodes

    def _others(self) -> list[NetNode]:
        # A node with streams to several replicas is counted once, by the one that has it here.
        local = self.book.conns
        seen: set[str] = set()
        out = []
        for node in self.remote:
            if node.node_id not in local and node.node_id not in seen:
                seen.add(node.node_id)
                out.append(node)
        return out

    def counts(self) -> dict[str, int]:
        others = self._others()
        book = self.book
        return {
            "nodes_connected": len(book.conns) + len(others),
            "nodes_idle": len(book.placement.available) + sum(1 for n in others if n.healthy and n.free > 0),
            "nodes_quarantined": book.quarantined_count() + sum(1 for n in others if not n.healthy),
        }

    def any_healthy(self) -> bool:
        return bool(self.book.healthy) or any(n.healthy for n in self._others())

    def mean_sps(self) -> float:
        speeds = [c.record.ewma_sps for c in self.book.healthy]
        speeds += [n.sps for n in self._others() if n.healthy]
        return sum(speeds) / len(speeds) if speeds else SPS_DEFAULT

    def total_slots(self) -> int:
        local = sum(c.info.concurrency for c in self.book.healthy)
        return local + sum(n.slots for n in self._others() if n.healthy)

    def slot_waits(self, limit: int) -> list[float]:
        """Seconds until each healthy node slot frees (0 for a free one), the ``limit`` soonest."""
        now = time.monotonic()
        times: list[float] = []
        for conn in self.book.healthy:
            times.extend([max(0.0, conn.busy_until - now)] * conn.free_slots)
            for attempt in conn.attempts.values():
                times.append(max(0.0, attempt.sent_at + attempt.expected_seconds - now))
        wall = time.time()
        for node in self._others():
            if node.healthy:
                times.extend(max(0.0, at - wall) for at in node.free_at)
        return heapq.nsmallest(limit, times)

    def can_run(self, size: tuple[int, int], excluded: Collection[str]) -> bool:
        """Whether a healthy node anywhere offers this size and has not refused the job for good."""
        for conn in self.book.healthy:
            if size in conn.info.sizes and conn.node_id not in excluded:
                return True
        return any(n.healthy and size in n.sizes and n.node_id not in excluded for n in self._others())


def estimate_etas(
    works: list[float], slot_waits: list[float], mean_sps: float, no_slot: float
) -> list[float]:
    """Seconds until each queued job (in serving order) is expected to finish.

    Each job takes the slot that frees first and keeps it for its expected render time; with
    no slot at all it waits ``no_slot`` seconds (the queue timeout).
    """
    slots = list(slot_waits)
    heapq.heapify(slots)
    etas = []
    for work in works:
        duration = mean_sps * work
        if slots:
            start = heapq.heappop(slots)
            heapq.heappush(slots, start + duration)
        else:
            start = no_slot
        etas.append(round(start + duration, 1))
    return etas


def retry_after(queue_length: int, slots: int, mean_sps: float) -> float:
    wait = queue_length / max(1, slots) * mean_sps * 30
    return float(min(60.0, max(1.0, wait)))
