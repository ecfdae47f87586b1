"""The nodes connected to this replica: their streams, what they said, their health and quarantine.

A node is untrusted and its Hello is clamped to sane values. Its record (measured speed,
faults, quarantine) outlives its stream, so dropping the stream and dialling again does not
wash it clean; with a network configured the record is also shared through it, so dialling
another replica does not either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from talos.relay.v1 import relay_pb2
from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay.metrics import RelayMetrics
from talos_gateway.relay.placement import Placement

if TYPE_CHECKING:
    from talos_gateway.relay.attempts import Attempt

log = logging.getLogger("talos_gateway.relay")

MAX_NODE_CONCURRENCY = 16
MAX_SIZES = 16
# The sane range for a node's claimed or measured seconds per step at 1024x1024.
SPS_MIN, SPS_MAX, SPS_DEFAULT = 0.0005, 60.0, 1.0
EWMA_WEIGHT = 0.3


def parse_size(text: str) -> tuple[int, int] | None:
    parts = text.lower().strip().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    w, h = int(parts[0]), int(parts[1])
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        return None
    return w, h


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def clamp_sps(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        return SPS_DEFAULT
    return min(SPS_MAX, max(SPS_MIN, value))


@dataclass
class NodeInfo:
    """What a node said about itself in its Hello (clamped to sane values)."""

    model: str
    sizes: frozenset[tuple[int, int]]
    concurrency: int
    device: str
    version: str
    seconds_per_step: float

    @classmethod
    def from_hello(cls, hello: relay_pb2.Hello) -> NodeInfo:
        sizes = set()
        for text in list(hello.sizes)[:MAX_SIZES]:
            size = parse_size(text)
            if size is not None:
                sizes.add(size)
        if not sizes:
            raise TalosError("invalid_request", "Hello names no valid size (WIDTHxHEIGHT)")
        return cls(
            model=hello.model[:100],
            sizes=frozenset(sizes),
            concurrency=min(MAX_NODE_CONCURRENCY, max(1, hello.concurrency)),
            device=hello.device[:100],
            version=hello.version[:50],
            seconds_per_step=clamp_sps(hello.seconds_per_step),
        )


@dataclass(eq=False)
class NodeRecord:
    """What the relay remembers about a node id across reconnects (times are monotonic)."""

    node_id: str
    ewma_sps: float
    consecutive_faults: int = 0
    quarantined_until: float = 0.0
    faults: int = 0
    jobs_done: int = 0


@dataclass(eq=False)
class Close:
    """Sent down a node's outbox to end its stream (with a status, or OK when code is None)."""

    code: grpc.StatusCode | None
    details: str


# Job ids recently released from a node: late messages about them are dropped without a fault.
RECENT_JOBS_KEPT = 256


@dataclass(eq=False)
class NodeConn:
    """One open stream from one node."""

    seq: int
    record: NodeRecord
    info: NodeInfo
    peer: str
    outbox: asyncio.Queue[relay_pb2.RelayMessage | Close] = field(default_factory=asyncio.Queue)
    attempts: dict[str, Attempt] = field(default_factory=dict)
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    last_seen: float = field(default_factory=time.monotonic)
    connected_at: float = field(default_factory=time.monotonic)
    closed: bool = False
    busy_until: float = 0.0
    busy_streak: int = 0
    # Bumped on every change that matters to scheduling; stale heap entries are skipped.
    version: int = 0

    @property
    def node_id(self) -> str:
        return self.record.node_id

    @property
    def free_slots(self) -> int:
        return max(0, self.info.concurrency - len(self.attempts))

    def send(self, message: relay_pb2.RelayMessage) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def remember(self, job_id: str) -> None:
        self.recent[job_id] = None
        while len(self.recent) > RECENT_JOBS_KEPT:
            self.recent.popitem(last=False)


class NodeBook:
    """Connected nodes, their records, which are healthy, and quarantine.

    ``on_change()`` is called whenever a node may have become able to take work;
    ``on_record(record)`` whenever a record changed (the network shares it).
    """

    def __init__(self, settings: Settings, metrics: RelayMetrics, on_change: Callable[[], None]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_change = on_change
        self.on_record: Callable[[NodeRecord], None] = lambda record: None
        self.conns: dict[str, NodeConn] = {}  # node id → its current stream
        self.records: dict[str, NodeRecord] = {}
        self.healthy: set[NodeConn] = set()
        self.placement = Placement(self.healthy)
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- membership --
    def record_for(self, node_id: str, claimed_sps: float) -> NodeRecord:
        record = self.records.get(node_id)
        if record is None:
            record = self.records[node_id] = NodeRecord(node_id, claimed_sps)
        return record

    def add(self, conn: NodeConn) -> None:
        self.conns[conn.node_id] = conn
        self.refresh(conn)

    def remove(self, conn: NodeConn) -> None:
        if self.conns.get(conn.node_id) is conn:
            del self.conns[conn.node_id]
        self.healthy.discard(conn)
        self.placement.discard(conn)
        conn.version += 1

    # -- state --
    def is_healthy(self, conn: NodeConn, now: float) -> bool:
        return not conn.closed and conn.record.quarantined_until <= now

    def refresh(self, conn: NodeConn) -> None:
        """Re-files a node after any change in its state (free slots, speed, health)."""
        now = time.monotonic()
        conn.version += 1
        if self.is_healthy(conn, now):
            self.healthy.add(conn)
        else:
            self.healthy.discard(conn)
        available = (
            conn in self.healthy and conn.free_slots > 0 and conn.busy_until <= now and not self.closed
        )
        self.placement.file(conn, available, len(self.conns))

    def refresh_and_notify(self, conn: NodeConn) -> None:
        if not conn.closed:
            self.refresh(conn)
            self.on_change()

    def quarantined_count(self) -> int:
        now = time.monotonic()
        return sum(1 for c in self.conns.values() if c.record.quarantined_until > now)

    def mean_sps(self) -> float:
        if not self.healthy:
            return SPS_DEFAULT
        return sum(c.record.ewma_sps for c in self.healthy) / len(self.healthy)

    # -- learning and faults --
    def learn_speed(self, record: NodeRecord, seconds: float, work: float) -> None:
        record.consecutive_faults = 0
        record.jobs_done += 1
        if work > 0 and seconds > 0:
            sample = clamp_sps(seconds / work)
            record.ewma_sps = (1 - EWMA_WEIGHT) * record.ewma_sps + EWMA_WEIGHT * sample
            current = self.conns.get(record.node_id)
            if current is not None:
                self.refresh(current)  # its rank in the heap follows its speed
        self.on_record(record)

    def fault(self, record: NodeRecord, reason: str) -> None:
        record.faults += 1
        record.consecutive_faults += 1
        self.metrics.node_faults.labels(reason).inc()
        if record.consecutive_faults < self.settings.quarantine_after_failures:
            self.on_record(record)
            return
        record.consecutive_faults = 0
        record.quarantined_until = time.monotonic() + self.settings.quarantine_seconds
        self.metrics.quarantines.inc()
        log.warning(
            "node quarantined",
            extra={"node_id": record.node_id, "reason": reason, "seconds": self.settings.quarantine_seconds},
        )
        self.on_record(record)
        conn = self.conns.get(record.node_id)
        if conn is not None:
            self.refresh(conn)
        if self.loop is not None:
            self.loop.call_later(
                self.settings.quarantine_seconds + 0.01, self.after_quarantine, record.node_id
            )

    def after_quarantine(self, node_id: str) -> None:
        conn = self.conns.get(node_id)
        if conn is not None:
            self.refresh_and_notify(conn)
