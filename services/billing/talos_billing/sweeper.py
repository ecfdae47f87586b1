"""Expiry: a hold nobody resolved in time (the gateway died) is returned by billing itself.

The sweeper only finds the holds past their time; each is expired by an EXPIRE operation
through the batch engine like any other change, so an expiry racing a late capture or
release is decided once, under the same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence

from talos_billing import statements as sql
from talos_billing.batching import BatchEngine
from talos_billing.books import Operation
from talos_billing.db import Database
from talos_billing.rules import HoldState, OpKind

log = logging.getLogger("talos_billing.sweeper")


class Sweeper:
    """Expires due holds on demand (:meth:`sweep`) or every few seconds (:meth:`start`)."""

    def __init__(self, db: Database, engine: BatchEngine, clock: Callable[[], float]) -> None:
        self.db = db
        self.engine = engine
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sweep(self, limit: int = 500) -> int:
        """Expires every hold past its time; returns how many were expired."""
        total = 0
        while True:
            params = {"now": int(self.clock() * 1000), "limit": limit}
            jobs: Sequence[str] = await self.db.read(
                functools.partial(sql.scalars, sql.EXPIRED_HOLDS, params)
            )
            if not jobs:
                return total
            outcomes = await asyncio.gather(
                *(self.engine.submit(Operation(OpKind.EXPIRE, (job,))) for job in jobs),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is not None and outcome[0].state is HoldState.EXPIRED:
                    total += 1
            if len(jobs) < limit:
                return total

    def start(self, every_seconds: float) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._forever(every_seconds))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self, every_seconds: float) -> None:
        """Sweeps every ``every_seconds`` until :meth:`stop` cancels it."""
        while True:
            try:
                expired = await self.sweep()
                if expired:
                    log.info("expired holds released", extra={"expired": expired})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiry sweep failed; trying again")
            await asyncio.sleep(every_seconds)
