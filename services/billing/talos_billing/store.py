"""The billing store: one object for the servicer to call, over the rooms that do the work.

* :mod:`~talos_billing.rules`: hold states and their one transition table, operation
  kinds, the allowance-first split, each operation's postings (summing to zero); no database
* :mod:`~talos_billing.books`: a batch's working copies of accounts and holds, and the
  operations applied to them; pure Python
* :mod:`~talos_billing.batching`: group commit (queue, batches of one transaction, retries)
* :mod:`~talos_billing.statements`: the ledger's SQL, built once; rows to working copies
* :mod:`~talos_billing.credentials`: accounts, API keys, node tokens
* :mod:`~talos_billing.sweeper`: expiry of the holds nobody resolved
* :mod:`~talos_billing.audit`: the invariants of the books
* :mod:`~talos_billing.limits`: the size of every id, amount and list billing accepts
* :mod:`~talos_billing.db`: where transactions run (SQLite's writer thread, PostgreSQL's pool)

One code path serves SQLite and PostgreSQL (SQLAlchemy Core). Every transaction is one
synchronous function over a :class:`~sqlalchemy.Connection` that :mod:`talos_billing.db`
runs; the store itself stays async: callers await the answer. Inputs are checked here,
before anything is queued.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, func, select, text

from talos_billing import schema
from talos_billing import statements as sql
from talos_billing.audit import AuditReport, check_books
from talos_billing.batching import BatchEngine
from talos_billing.books import HoldAnswer, Operation
from talos_billing.config import Settings
from talos_billing.credentials import Credentials, NodeIdentity
from talos_billing.db import Database, database_url, describe, open_database
from talos_billing.limits import (
    MAX_ACCOUNT_ID,
    MAX_JOB_ID,
    MAX_REASON,
    check_credits,
    check_id,
    check_job_ids,
)
from talos_billing.rules import AccountView, HoldView, OpKind
from talos_billing.schema import ledger
from talos_billing.sweeper import Sweeper

log = logging.getLogger("talos_billing.store")

Clock = Callable[[], float]


class Store:
    """The ledger and its accounts. Open with :meth:`open`, always :meth:`close`."""

    def __init__(
        self,
        db: Database,
        *,
        price: int = 18,
        hold_ttl_seconds: float = 600.0,
        batch_max: int = 256,
        batch_workers: int = 1,
        optimistic: bool = True,
        clock: Clock = time.time,
    ) -> None:
        if price <= 0:
            raise ValueError("price must be positive")
        self.db = db
        self.price = price
        self.hold_ttl_ms = int(hold_ttl_seconds * 1000)
        self.clock = clock
        self.dialect = db.name
        self.ledger = BatchEngine(
            db,
            price=price,
            hold_ttl_ms=self.hold_ttl_ms,
            clock=clock,
            batch_max=batch_max,
            workers=batch_workers,
            optimistic=optimistic,
        )
        self.credentials = Credentials(db, clock)
        self.sweeper = Sweeper(db, self.ledger, clock)

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    async def open(cls, settings: Settings, *, clock: Clock = time.time, migrate: bool = True) -> Store:
        url = database_url(settings)
        db = open_database(settings)
        # SQLite has one writer: more workers would only queue for it.
        workers = max(1, settings.batch_workers) if db.name == "postgresql" else 1
        store = cls(
            db,
            price=settings.price,
            hold_ttl_seconds=settings.hold_ttl_seconds,
            batch_max=settings.batch_max,
            batch_workers=workers,
            optimistic=settings.optimistic_batches,
            clock=clock,
        )
        try:
            if settings.database_schema and store.dialect == "postgresql":
                await store._create_schema(settings.database_schema)
            if migrate:
                applied = await store.migrate()
                if applied:
                    log.info("schema migrated", extra={"versions": applied, "database": describe(url)})
        except BaseException:
            await store.close()
            raise
        store.start()
        return store

    async def _create_schema(self, name: str) -> None:
        def create(conn: Connection) -> None:
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))

        await self.db.write(create)

    async def migrate(self) -> list[int]:
        return await self.db.write(functools.partial(schema.migrate, now_ms=int(self.clock() * 1000)))

    async def schema_version(self) -> int:
        def version(conn: Connection) -> int:
            return int(conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0)

        return await self.db.read(version)

    def start(self) -> None:
        self.ledger.start()

    def start_sweeper(self, every_seconds: float) -> None:
        self.sweeper.start(every_seconds)

    async def close(self) -> None:
        """Stops the sweeper, finishes the operations already queued, closes the database."""
        await self.sweeper.stop()
        await self.ledger.close()
        await self.db.close()

    # -- accounts and credentials -----------------------------------------------------------
    async def create_account(self, credits: int = 0, daily_allowance: int = 0) -> tuple[str, str]:
        """A new account with its first API key; returns (account_id, api_key)."""
        return await self.credentials.create_account(credits, daily_allowance)

    async def create_api_key(self, account_id: str) -> str:
        return await self.credentials.create_api_key(account_id)

    async def revoke_api_keys(self, account_id: str) -> int:
        return await self.credentials.revoke_api_keys(account_id)

    async def authenticate(self, api_key: str) -> AccountView:
        return await self.credentials.authenticate(api_key)

    async def get_account(self, account_id: str) -> AccountView:
        return await self.credentials.get_account(account_id)

    async def create_node_token(self, name: str = "") -> tuple[str, str]:
        return await self.credentials.create_node_token(name)

    async def authenticate_node(self, token: str) -> NodeIdentity:
        return await self.credentials.authenticate_node(token)

    async def revoke_node_token(self, node_id: str) -> bool:
        return await self.credentials.revoke_node_token(node_id)

    async def active_nodes(self, node_ids: Sequence[str]) -> list[str]:
        """Of ``node_ids``, those whose token exists and is not revoked."""
        return await self.credentials.active_nodes(node_ids)

    # -- credits: every change goes through the batch engine ---------------------------------
    async def reserve(self, job_id: str, account_id: str) -> HoldAnswer:
        """Holds one price for the job (allowance first); the same job id gives the same hold."""
        check_id(job_id, "job_id", MAX_JOB_ID)
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        result: HoldAnswer = await self.ledger.submit(Operation(OpKind.RESERVE, (job_id,), account_id))
        return result

    async def reserve_many(
        self, account_id: str, job_ids: Sequence[str]
    ) -> tuple[list[HoldView], AccountView]:
        """Holds one price per job in one transaction, all or nothing; idempotent by job id."""
        jobs = check_job_ids(job_ids)
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        result: tuple[list[HoldView], AccountView] = await self.ledger.submit(
            Operation(OpKind.RESERVE_MANY, jobs, account_id)
        )
        return result

    async def capture(self, job_id: str) -> HoldAnswer:
        """Charges the job's hold; idempotent; an expired hold is not charged (hold_expired)."""
        check_id(job_id, "job_id", MAX_JOB_ID)
        result: HoldAnswer = await self.ledger.submit(Operation(OpKind.CAPTURE, (job_id,)))
        return result

    async def release(self, job_id: str, reason: str = "released") -> HoldAnswer:
        """Returns the job's hold; a hold resolved before is answered as it is."""
        check_id(job_id, "job_id", MAX_JOB_ID)
        reason = reason or "released"
        check_id(reason, "reason", MAX_REASON)
        result: HoldAnswer = await self.ledger.submit(Operation(OpKind.RELEASE, (job_id,), reason=reason))
        return result

    async def expire(self, job_id: str) -> HoldAnswer | None:
        """Releases the job's hold as EXPIRED if it is still held past its time."""
        result: HoldAnswer | None = await self.ledger.submit(Operation(OpKind.EXPIRE, (job_id,)))
        return result

    async def grant(self, account_id: str, credits: int) -> AccountView:
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        check_credits(credits, "credits", positive=True)
        op = Operation(OpKind.GRANT, account_id=account_id, amount=credits, txn=f"grant:{uuid.uuid4().hex}")
        view: AccountView = await self.ledger.submit(op)
        log.info("credits granted", extra={"account_id": account_id, "credits": credits})
        return view

    async def set_allowance(self, account_id: str, daily_allowance: int) -> AccountView:
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        check_credits(daily_allowance, "daily_allowance", positive=False)
        op = Operation(OpKind.SET_ALLOWANCE, account_id=account_id, amount=daily_allowance)
        view: AccountView = await self.ledger.submit(op)
        log.info("allowance set", extra={"account_id": account_id, "daily_allowance": daily_allowance})
        return view

    async def confirm_age(self, account_id: str) -> AccountView:
        check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        view: AccountView = await self.ledger.submit(Operation(OpKind.CONFIRM_AGE, account_id=account_id))
        return view

    # -- expiry and checking the books -------------------------------------------------------
    async def sweep(self, limit: int = 500) -> int:
        """Expires every hold past its time; returns how many were expired."""
        return await self.sweeper.sweep(limit)

    async def hold(self, job_id: str) -> HoldView | None:
        row = await self.db.read(functools.partial(sql.first, sql.READ_HOLD, {"job_id": job_id}))
        return None if row is None else sql.hold_from(row).view()

    async def ledger_entries(
        self, *, job_id: str | None = None, account: str | None = None
    ) -> list[dict[str, Any]]:
        query = select(ledger).order_by(ledger.c.id)
        if job_id is not None:
            query = query.where(ledger.c.job_id == job_id)
        if account is not None:
            query = query.where(ledger.c.account == account)
        return await self.db.read(lambda conn: [dict(row._mapping) for row in conn.execute(query)])

    async def audit(self) -> AuditReport:
        """Checks the books: entries sum to zero, balances match the ledger, holds match."""
        # One snapshot for every check (a SQLite read transaction already is one).
        return await self.db.read(check_books, snapshot=True)
