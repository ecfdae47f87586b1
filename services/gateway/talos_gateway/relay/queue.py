"""The network queue: tickets of waiting jobs, fair between accounts, and what replicas see of it.

A **ticket** is everything placement needs of a waiting job and nothing more: no prompt, no
image. The replica that accepted the job (its origin) pushes the ticket; a replica with a free
node that fits claims it, in fair order, and fetches the job itself from the origin (or, when
it is the origin, takes it in-process).

Two backends implement one interface (:class:`TicketQueue`): :class:`MemoryQueue` (one
replica: the queue in this process, nothing else to run) and
:class:`talos_gateway.relay.redisqueue.RedisQueue` (many replicas sharing one Redis).
Pushes and removals are staged (the memory queue applies them at once); :meth:`exchange`
applies what is staged, claims tickets for this replica's free nodes and, when asked, returns
a :class:`QueueView` of the whole network.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from talos_gateway.relay.fairqueue import FairQueue


@dataclass(eq=False)
class Ticket:
    job_id: str
    account_id: str
    width: int
    height: int
    work: float  # steps × size relative to 1024²
    origin: str  # the replica that accepted the job
    origin_peer: str  # where that replica's PeerService listens ("" for a single replica)
    secret: str  # changes on every push: a claim must name it to fetch the job
    enqueued: float = field(default_factory=time.time)
    excluded: frozenset[str] = frozenset()  # nodes that refused it for good
    avoid: frozenset[str] = frozenset()  # nodes it failed on

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_json(self) -> str:
        return json.dumps(
            {
                "j": self.job_id,
                "a": self.account_id,
                "w": self.width,
                "h": self.height,
                "u": self.work,
                "o": self.origin,
                "p": self.origin_peer,
                "s": self.secret,
                "t": self.enqueued,
                "x": sorted(self.excluded),
                "v": sorted(self.avoid),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Ticket:
        data = json.loads(raw)
        return cls(
            job_id=str(data["j"]),
            account_id=str(data["a"]),
            width=int(data["w"]),
            height=int(data["h"]),
            work=float(data["u"]),
            origin=str(data["o"]),
            origin_peer=str(data["p"]),
            secret=str(data["s"]),
            enqueued=float(data["t"]),
            excluded=frozenset(_strings(data.get("x"))),
            avoid=frozenset(_strings(data.get("v"))),
        )


def _strings(value: Any) -> list[str]:
    # Redis' Lua JSON encodes an empty list as {}.
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class NetNode:
    """A node as the network registry shows it (connected to another replica)."""

    node_id: str
    replica_id: str
    sizes: frozenset[tuple[int, int]]
    slots: int
    sps: float
    healthy: bool
    free: int  # slots free now (0 while its replica drains)
    free_at: tuple[float, ...]  # epoch seconds each slot is expected to free


@dataclass
class QueueView:
    """The network queue in serving order (position 1 first) and the nodes of the other replicas."""

    tickets: list[Ticket]
    nodes: list[NetNode]
    at: float = field(default_factory=time.monotonic)

    def count(self, account_id: str) -> int:
        return sum(1 for t in self.tickets if t.account_id == account_id)


@dataclass(frozen=True)
class FreeNode:
    """A node of this replica with free slots, offered to the network queue."""

    node_id: str
    sizes: Sequence[str]
    free: int
    held: Sequence[str]  # job ids it holds now (a job is never claimed for a node that has it)
    key: float  # expected seconds per step at 1024², slowed by its jobs (lower is better)


class Claimer(Protocol):
    """This replica's side of a claim."""

    def can_claim(self) -> bool: ...
    def place(self, ticket: Ticket) -> bool: ...  # memory: pick a local node and dispatch now
    def offer(self) -> list[FreeNode]: ...  # network: the free nodes, best first
    def place_on(self, ticket: Ticket, node_id: str) -> None: ...  # network: a granted claim


@dataclass
class Exchanged:
    rejected: list[str]  # job ids pushed beyond the queue bound
    view: QueueView | None
    claimed: int
    length: int  # tickets in the queue afterwards


class TicketQueue(Protocol):
    shared: bool  # True when other replicas see the same queue

    def stage_push(self, ticket: Ticket, *, front: bool = False) -> None: ...
    def stage_remove(self, ticket: Ticket) -> None: ...
    def pending(self) -> bool: ...
    def local_length(self) -> int: ...
    async def exchange(self, claimer: Claimer | None, *, want_view: bool) -> Exchanged: ...
    async def close(self) -> None: ...


class MemoryQueue:
    """One replica: the fair queue lives here (round-robin over per-account FIFOs)."""

    shared = False

    def __init__(self) -> None:
        self.fair: FairQueue[Ticket] = FairQueue()
        self._by_job: dict[str, Ticket] = {}

    def stage_push(self, ticket: Ticket, *, front: bool = False) -> None:
        self._by_job[ticket.job_id] = ticket
        self.fair.push(ticket, front=front)

    def stage_remove(self, ticket: Ticket) -> None:
        queued = self._by_job.pop(ticket.job_id, None)
        if queued is not None:
            self.fair.remove(queued)

    def pending(self) -> bool:
        return False

    def local_length(self) -> int:
        return len(self.fair)

    def __len__(self) -> int:
        return len(self.fair)

    def dispatch(self, claimer: Claimer) -> int:
        def place(ticket: Ticket) -> bool:
            if claimer.place(ticket):
                self._by_job.pop(ticket.job_id, None)
                return True
            return False

        return self.fair.dispatch(place, claimer.can_claim)

    async def exchange(self, claimer: Claimer | None, *, want_view: bool) -> Exchanged:
        claimed = self.dispatch(claimer) if claimer is not None and self.fair else 0
        view = QueueView(list(self.fair.in_order()), []) if want_view else None
        return Exchanged([], view, claimed, len(self.fair))

    async def close(self) -> None:
        return None
