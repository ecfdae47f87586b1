"""The states of a job and of an attempt, and the one table of legal moves for each.

A **job** is what a gateway replica accepted (its origin keeps it): it waits in the network
queue, is dispatched to a node (on this replica or another), goes back to the queue when an
attempt does not deliver, and ends once. An **attempt** is one job on one node (the node's
replica, the host, keeps it): fetched from the origin when the job came from another replica,
sent down the node's stream, running once the node accepts, cancelled, or validating the
result the node returned; it ends once.

Every change of state goes through :func:`advance`, which refuses a move the table does not
list. The relay's tests fail on any refused move (:data:`REFUSED` counts them, even when the
exception was swallowed by a callback).
"""

from __future__ import annotations

import enum
from typing import TypeVar


class JobState(enum.Enum):
    NEW = "new"
    QUEUED = "queued"  # a ticket in the network queue
    DISPATCHED = "dispatched"  # an attempt holds it
    DONE = "done"


class AttemptState(enum.Enum):
    FETCHING = "fetching"  # the host claimed it for a node and asks the origin for the job
    SENT = "sent"  # down the node's stream, not yet accepted
    RUNNING = "running"  # the node accepted it
    CANCELLING = "cancelling"  # CancelJob sent; the node's slot stays taken until it confirms
    VALIDATING = "validating"  # the node returned an image; the relay checks it
    ENDED = "ended"


JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.NEW: frozenset({JobState.QUEUED, JobState.DONE}),
    JobState.QUEUED: frozenset({JobState.DISPATCHED, JobState.DONE}),
    JobState.DISPATCHED: frozenset({JobState.QUEUED, JobState.DONE}),
    JobState.DONE: frozenset(),
}

ATTEMPT_MOVES: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.FETCHING: frozenset({AttemptState.SENT, AttemptState.ENDED}),
    AttemptState.SENT: frozenset({AttemptState.RUNNING, AttemptState.CANCELLING, AttemptState.ENDED}),
    AttemptState.RUNNING: frozenset({AttemptState.CANCELLING, AttemptState.VALIDATING, AttemptState.ENDED}),
    AttemptState.CANCELLING: frozenset({AttemptState.ENDED}),
    AttemptState.VALIDATING: frozenset({AttemptState.ENDED}),
    AttemptState.ENDED: frozenset(),
}

# States in which an attempt occupies its node (counted as running on it).
ON_NODE = frozenset({AttemptState.SENT, AttemptState.RUNNING})

S = TypeVar("S", JobState, AttemptState)


class IllegalTransition(RuntimeError):
    """A move its table does not allow: a bug in the relay, never the nodes' doing."""


class _Refused:
    count = 0


REFUSED = _Refused()


def advance(current: S, new: S, what: str) -> S:
    """Returns ``new`` when ``current → new`` is legal; raises :class:`IllegalTransition` otherwise."""
    table: dict[S, frozenset[S]] = JOB_MOVES if isinstance(current, JobState) else ATTEMPT_MOVES  # type: ignore[assignment]
    if new not in table[current]:
        REFUSED.count += 1
        raise IllegalTransition(f"{what}: {current.value} → {new.value} is not a legal move")
    return new
