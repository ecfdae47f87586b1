"""A queue that is fair between accounts: round-robin over per-account FIFOs.

Each account has its own FIFO; the dispatcher serves the accounts in turn, one job each, so an
account that sends a burst of 200 jobs waits behind itself, not in front of everyone else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class _Queued(Protocol):
    account_id: str


T = TypeVar("T", bound=_Queued)


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._fifos: dict[str, deque[T]] = {}
        # Accounts with at least one job, in the order they will be served.
        self._turns: deque[str] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def count(self, account_id: str) -> int:
        fifo = self._fifos.get(account_id)
        return len(fifo) if fifo else 0

    def push(self, item: T, *, front: bool = False) -> None:
        """Adds a job; ``front`` puts a retried job ahead of its account's newer ones."""
        fifo = self._fifos.get(item.account_id)
        if fifo is None:
            fifo = self._fifos[item.account_id] = deque()
            self._turns.append(item.account_id)
        if front:
            fifo.appendleft(item)
        else:
            fifo.append(item)
        self._size += 1

    def remove(self, item: T) -> bool:
        fifo = self._fifos.get(item.account_id)
        if not fifo:
            return False
        try:
            fifo.remove(item)
        except ValueError:
            return False
        self._size -= 1
        if not fifo:
            del self._fifos[item.account_id]
            self._turns.remove(item.account_id)
        return True

    def dispatch(self, place: Callable[[T], bool], can_continue: Callable[[], bool]) -> int:
        """Offers account heads in turn to ``place`` (True = taken) while ``can_continue()``.

        An account whose head cannot be placed now is skipped for the rest of this round
        (its later jobs stay behind it: each account's own order is kept).
        """
        placed = 0
        blocked: set[str] = set()
        while self._turns and len(blocked) < len(self._turns) and can_continue():
            account = self._turns[0]
            self._turns.rotate(-1)
            if account in blocked:
                continue
            fifo = self._fifos[account]
            if not place(fifo[0]):
                blocked.add(account)
                continue
            fifo.popleft()
            self._size -= 1
            placed += 1
            if not fifo:
                # It was rotated to the back; it leaves the rotation until it has work again.
                del self._fifos[account]
                self._turns.pop()
        return placed

    def in_order(self) -> Iterator[T]:
        """Every queued job in the order the dispatcher would serve them (position 1 first)."""
        fifos = [self._fifos[a] for a in self._turns]
        depth = 0
        while fifos:
            still = []
            for fifo in fifos:
                if depth < len(fifo):
                    yield fifo[depth]
                    if depth + 1 < len(fifo):
                        still.append(fifo)
            fifos = still
            depth += 1

    def __iter__(self) -> Iterator[T]:
        for fifo in self._fifos.values():
            yield from fifo
