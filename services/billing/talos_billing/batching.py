"""Group commit: ledger operations that arrive together are applied in one transaction.

Everything that moves credits (reserve, capture, release, expiry, grant) or changes an
account goes through :class:`BatchEngine`. A batch

1. reads the accounts it touches and the holds of its jobs in one statement,
2. applies the operations one after another in Python (:class:`~talos_billing.books.Books`),
   exactly as if each were alone,
3. writes the result with a few set-wise statements (new holds, changed holds, changed
   accounts, ledger entries; each one statement however many rows) and commits.

Each operation's answer is the state right after it. What makes the read safe:

* SQLite: the writer's ``BEGIN IMMEDIATE`` holds the database's single write lock, so no
  one else changes anything between the read and the commit.
* PostgreSQL, first try: a REPEATABLE READ snapshot, no locks. Every decision rests on a
  row the batch also writes (a reserve writes its account, a capture its hold), and
  PostgreSQL refuses to update a row that changed after the snapshot (serialization
  failure); a job id raced in by another account trips the primary key. Either way the
  batch rolls back and goes again pessimistically: lock the accounts in id order, then
  the holds in job order (``SELECT ... FOR UPDATE``), and decide on what is locked.

So two reserves can never overdraw an account. A batch that keeps failing in the database
is split into single operations, so one bad operation never fails its neighbours; every
operation is idempotent by job id, so a retry after an ambiguous commit never charges twice.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from talos_billing import statements as sql
from talos_billing.books import Account, Books, Hold, Note, Operation
from talos_billing.db import Database
from talos_billing.rules import OpKind
from talos_common.errors import TalosError

log = logging.getLogger("talos_billing.ledger")

_BATCH_ATTEMPTS = 4
_Pending = tuple[Operation, asyncio.Future[Any]]


class _RetryBatch(Exception):
    """The batch saw a state it cannot apply safely; roll back and read again."""


class BatchEngine:
    """Queues operations and applies them in batches, one transaction each."""

    def __init__(
        self,
        db: Database,
        *,
        price: int,
        hold_ttl_ms: int,
        clock: Callable[[], float],
        batch_max: int = 256,
        workers: int = 1,
        optimistic: bool = True,
    ) -> None:
        self.db = db
        self.price = price
        self.hold_ttl_ms = hold_ttl_ms
        self.clock = clock
        self.batch_max = max(1, batch_max)
        self.workers = max(1, workers)
        self.dialect = db.name
        self.optimistic = optimistic and self.dialect == "postgresql"
        self._reads = sql.batch_reads(self.dialect)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Counters for the closing log line: how well operations group into batches.
        self.batches = 0
        self.batched_ops = 0
        self.batch_seconds = 0.0
        self.retried_batches = 0

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def close(self) -> None:
        """Finishes the operations already queued; new ones are refused."""
        self._closing = True
        self._wakeup.set()
        if not self._tasks:
            return
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        log.info(
            "ledger closed",
            extra={
                "batches": self.batches,
                "operations": self.batched_ops,
                "batch_ms": round(1000 * self.batch_seconds / max(1, self.batches), 2),
                "retried": self.retried_batches,
            },
        )

    async def submit(self, op: Operation) -> Any:
        """Queues ``op``; its answer once its batch has committed (its TalosError raised)."""
        if self._closing:
            raise TalosError("unavailable", "billing is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        self._wakeup.set()
        return await future

    async def _worker(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self.batch_max, len(self._queue)))]
            self.batches += 1
            self.batched_ops += len(batch)
            started = time.perf_counter()
            try:
                await self._run(batch)
            except Exception:  # never lose a worker: fail the batch's callers instead
                log.exception("ledger batch failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(TalosError("internal", "ledger error"))
            self.batch_seconds += time.perf_counter() - started

    async def _run(self, batch: list[_Pending]) -> None:
        delay = 0.002
        ops = [op for op, _ in batch]
        for attempt in range(1, _BATCH_ATTEMPTS + 1):
            try:
                results, notes = await self._apply(ops, optimistic=self.optimistic and attempt == 1)
            except (_RetryBatch, DBAPIError) as exc:
                self.retried_batches += 1
                if attempt == _BATCH_ATTEMPTS:
                    break
                # A lost optimistic race is routine; anything else is worth a warning.
                routine = isinstance(exc, _RetryBatch) or (attempt == 1 and self.optimistic)
                log.log(
                    logging.DEBUG if routine else logging.WARNING,
                    "ledger batch retried",
                    extra={"ops": len(batch), "attempt": attempt, "error": type(exc).__name__},
                )
                if attempt > 1:
                    await asyncio.sleep(delay)
                    delay *= 4
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller went away; the operation stands (idempotent)
                    continue
                if isinstance(result, TalosError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            for level, message, extra in notes:
                log.log(level, message, extra=extra)
            return
        if len(batch) > 1:
            # One operation may be what fails: give each its own transaction.
            for pending in batch:
                await self._run([pending])
            return
        op, future = batch[0]
        log.error("ledger operation failed", extra={"kind": op.kind.value, "job_id": op.job_id or None})
        if not future.done():
            future.set_exception(TalosError("unavailable", "the ledger store is unavailable"))

    async def _apply(self, ops: Sequence[Operation], *, optimistic: bool) -> tuple[list[Any], list[Note]]:
        """One transaction for the whole batch; returns each operation's answer and its log lines.

        ``optimistic`` (PostgreSQL's first try): one REPEATABLE READ read without locks.
        Otherwise PostgreSQL locks accounts then holds before deciding; SQLite's writer
        already holds the database's write lock. See the module's docstring.
        """
        now_ms = int(self.clock() * 1000)
        params = {
            "accs": sorted({op.account_id for op in ops if op.account_id}),
            "jobs": sorted({job_id for op in ops for job_id in op.job_ids}),
        }
        pessimistic = self.dialect == "postgresql" and not optimistic
        transaction = functools.partial(self._transaction, ops, params, now_ms, pessimistic)
        return await self.db.write(transaction, snapshot=optimistic)

    def _transaction(
        self,
        ops: Sequence[Operation],
        params: dict[str, list[str]],
        now_ms: int,
        pessimistic: bool,
        conn: Connection,
    ) -> tuple[list[Any], list[Note]]:
        """The body of a batch's transaction: read, apply in Python, write; all synchronous.

        On SQLite this runs on the writer thread (touch no asyncio object here: the
        operations' futures are settled, and their log lines written, by :meth:`_run`,
        back on the event loop once the batch has committed).
        """
        found: dict[str, Account] = {}
        hold_map: dict[str, Hold] = {}
        if pessimistic:
            for row in conn.execute(self._reads.lock_accounts, params):
                found[row.id] = sql.account_from(row)
            if params["jobs"]:
                for row in conn.execute(self._reads.holds, params):
                    if row.account_id not in found:
                        # Made after the lock statement read the holds: again, under the lock.
                        raise _RetryBatch(row.job_id)
                    hold_map[row.job_id] = sql.hold_from(row)
        else:
            for row in conn.execute(self._reads.together, params):
                if row.a_id not in found:
                    found[row.a_id] = sql.account_from(row, "a_")
                if row.h_job_id is not None:
                    hold_map[row.h_job_id] = sql.hold_from(row, "h_")
        grants = [op.txn for op in ops if op.kind is OpKind.GRANT]
        posted = set(conn.execute(sql.POSTED, {"txns": grants}).scalars()) if grants else set()
        books = Books(
            found,
            hold_map,
            now_ms,
            self.price,
            self.hold_ttl_ms,
            posted=posted,
            debug=log.isEnabledFor(logging.DEBUG),
        )
        results = [books.apply(op) for op in ops]
        _flush(conn, books)
        return results, books.notes


def _flush(conn: Connection, books: Books) -> None:
    ordered = sorted(books.holds.values(), key=lambda h: h.job_id)
    new_holds = [sql.hold_row(h) for h in ordered if h.is_new]
    changed_holds = [sql.hold_params(h) for h in ordered if h.dirty and not h.is_new]
    changed_accounts = [
        sql.account_params(a) for a in sorted(books.accounts.values(), key=lambda a: a.id) if a.dirty
    ]
    # Accounts before holds, each in key order: the order the pessimistic path locks them,
    # so concurrent batches wait for each other instead of deadlocking.
    if changed_accounts:
        conn.execute(sql.UPDATE_ACCOUNT, changed_accounts)
    if new_holds:
        conn.execute(sql.INSERT_HOLDS, new_holds)
    if changed_holds:
        conn.execute(sql.UPDATE_HOLD, changed_holds)
    if books.entries:
        conn.execute(sql.INSERT_LEDGER, books.entries)
