"""The billing store: accounts, keys, node tokens, holds and the append-only ledger.

One code path serves SQLite and PostgreSQL (SQLAlchemy Core). Every transaction is one
synchronous function over a :class:`~sqlalchemy.Connection` that :mod:`talos_billing.db`
runs: on SQLite whole, in one call into its writer thread (a thread hop per statement was
most of a write's latency), on PostgreSQL through ``run_sync`` inside an asyncpg
transaction. The store itself stays async: callers await the answer.

Everything that moves credits (reserve, capture, release, expiry, grant) or changes an
account goes through one *batch engine*: operations that arrive together are applied in
one transaction (group commit). A batch

1. reads the accounts it touches and the holds of its jobs in one statement,
2. applies the operations one after another in Python, exactly as if each were alone,
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
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Row,
    Select,
    String,
    TypeDecorator,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeEngine

from talos_billing import keys, schema
from talos_billing.config import Settings
from talos_billing.db import Database, database_url, describe, open_database
from talos_billing.schema import (
    CAPTURED,
    EXPIRED,
    HELD,
    RELEASED,
    SYS_ALLOWANCE,
    SYS_GRANTS,
    SYS_HOLDS,
    SYS_REVENUE,
    accounts,
    api_keys,
    holds,
    ledger,
    node_tokens,
)
from talos_common.errors import TalosError

log = logging.getLogger("talos_billing.store")

Clock = Callable[[], float]
DAY_MS = 86_400_000
MAX_JOB_ID = 128
MAX_ACCOUNT_ID = 64
MAX_NAME = 200
MAX_REASON = 64
MAX_CREDITS = 10**12
_BATCH_ATTEMPTS = 4


# -- what callers get back ---------------------------------------------------------------
@dataclass(frozen=True)
class AccountView:
    account_id: str
    balance: int
    daily_allowance: int
    allowance_remaining: int
    allowance_resets_at: float  # seconds since the epoch: the next 00:00 UTC
    age_confirmed: bool


@dataclass(frozen=True)
class HoldView:
    job_id: str
    account_id: str
    amount: int
    from_allowance: int
    from_balance: int
    state: int
    expires_at: float  # seconds since the epoch
    allowance_day: int
    reason: str | None


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    name: str


@dataclass
class AuditReport:
    """Invariants of the ledger; ``ok`` when every one holds."""

    problems: list[str] = field(default_factory=list)
    ledger_sum: int = 0
    entries: int = 0
    held: int = 0
    revenue: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# -- working copies inside a batch -------------------------------------------------------
class _Account:
    __slots__ = (
        "age_confirmed_at",
        "allowance_day",
        "allowance_used",
        "balance",
        "daily_allowance",
        "dirty",
        "id",
    )

    def __init__(self, row: Row[Any], prefix: str = "") -> None:
        mapping = row._mapping
        self.id: str = mapping[prefix + "id"]
        self.balance: int = mapping[prefix + "balance"]
        self.daily_allowance: int = mapping[prefix + "daily_allowance"]
        self.allowance_day: int = mapping[prefix + "allowance_day"]
        self.allowance_used: int = mapping[prefix + "allowance_used"]
        self.age_confirmed_at: int | None = mapping[prefix + "age_confirmed_at"]
        self.dirty = False

    def view(self, day: int) -> AccountView:
        return _account_view(
            self.id,
            self.balance,
            self.daily_allowance,
            self.allowance_day,
            self.allowance_used,
            self.age_confirmed_at,
            day,
        )

    def params(self) -> dict[str, Any]:
        return {
            "b_id": self.id,
            "b_balance": self.balance,
            "b_daily_allowance": self.daily_allowance,
            "b_allowance_day": self.allowance_day,
            "b_allowance_used": self.allowance_used,
            "b_age_confirmed_at": self.age_confirmed_at,
        }


class _Hold:
    __slots__ = (
        "account_id",
        "allowance_day",
        "amount",
        "created_at",
        "dirty",
        "expires_at",
        "from_allowance",
        "from_balance",
        "is_new",
        "job_id",
        "reason",
        "resolved_at",
        "state",
    )

    def __init__(
        self,
        job_id: str,
        account_id: str,
        amount: int,
        from_allowance: int,
        from_balance: int,
        allowance_day: int,
        state: int,
        created_at: int,
        expires_at: int,
        resolved_at: int | None = None,
        reason: str | None = None,
        is_new: bool = False,
    ) -> None:
        self.job_id = job_id
        self.account_id = account_id
        self.amount = amount
        self.from_allowance = from_allowance
        self.from_balance = from_balance
        self.allowance_day = allowance_day
        self.state = state
        self.created_at = created_at
        self.expires_at = expires_at
        self.resolved_at = resolved_at
        self.reason = reason
        self.is_new = is_new
        self.dirty = False

    @classmethod
    def from_row(cls, row: Row[Any], prefix: str = "") -> _Hold:
        mapping = row._mapping
        return cls(
            mapping[prefix + "job_id"],
            mapping[prefix + "account_id"],
            mapping[prefix + "amount"],
            mapping[prefix + "from_allowance"],
            mapping[prefix + "from_balance"],
            mapping[prefix + "allowance_day"],
            mapping[prefix + "state"],
            mapping[prefix + "created_at"],
            mapping[prefix + "expires_at"],
            mapping[prefix + "resolved_at"],
            mapping[prefix + "reason"],
        )

    def view(self) -> HoldView:
        return HoldView(
            self.job_id,
            self.account_id,
            self.amount,
            self.from_allowance,
            self.from_balance,
            self.state,
            self.expires_at / 1000.0,
            self.allowance_day,
            self.reason,
        )

    def insert_row(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "account_id": self.account_id,
            "amount": self.amount,
            "from_allowance": self.from_allowance,
            "from_balance": self.from_balance,
            "allowance_day": self.allowance_day,
            "state": self.state,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "resolved_at": self.resolved_at,
            "reason": self.reason,
        }

    def update_params(self) -> dict[str, Any]:
        return {
            "b_job_id": self.job_id,
            "b_state": self.state,
            "b_resolved_at": self.resolved_at,
            "b_reason": self.reason,
        }


class _Op:
    __slots__ = ("account_id", "amount", "future", "job_id", "kind", "reason", "txn")

    def __init__(
        self,
        kind: str,
        future: asyncio.Future[Any],
        job_id: str = "",
        account_id: str = "",
        amount: int = 0,
        reason: str = "",
        txn: str = "",
    ) -> None:
        self.kind = kind
        self.future = future
        self.job_id = job_id
        self.account_id = account_id
        self.amount = amount
        self.reason = reason
        # A grant's ledger operation id, fixed before the first attempt (see _apply_one).
        self.txn = txn


# A log line a batch leaves for after its commit: (level, message, extra).
_Note = tuple[int, str, dict[str, Any]]


class _Work:
    """A batch's view of the store: locked accounts, its holds, what it will write."""

    __slots__ = ("accounts", "day", "entries", "holds", "notes", "now_ms", "posted")

    def __init__(
        self, accts: dict[str, _Account], hold_map: dict[str, _Hold], now_ms: int, posted: set[str]
    ) -> None:
        self.accounts = accts
        self.holds = hold_map
        self.now_ms = now_ms
        self.day = now_ms // DAY_MS
        self.entries: list[dict[str, Any]] = []
        # The batch's grant operations already in the ledger (an earlier attempt committed).
        self.posted = posted
        self.notes: list[_Note] = []

    def note(self, level: int, message: str, **extra: Any) -> None:
        """Logs after the commit: an attempt rolled back and retried leaves no line of its own."""
        self.notes.append((level, message, extra))

    def post(self, txn: str, kind: str, job_id: str | None, *legs: tuple[str, int]) -> None:
        """Appends one operation's entries; the legs always sum to zero."""
        assert sum(amount for _, amount in legs) == 0, legs
        for account, amount in legs:
            if amount:
                self.entries.append(
                    {
                        "txn": txn,
                        "kind": kind,
                        "account": account,
                        "amount": amount,
                        "job_id": job_id,
                        "at": self.now_ms,
                    }
                )


class _RetryBatch(Exception):
    """The batch saw a state it cannot apply safely; roll back and read again."""


def _account_view(
    account_id: str,
    balance: int,
    daily_allowance: int,
    allowance_day: int,
    allowance_used: int,
    age_confirmed_at: int | None,
    day: int,
) -> AccountView:
    used = allowance_used if allowance_day == day else 0
    return AccountView(
        account_id=account_id,
        balance=balance,
        daily_allowance=daily_allowance,
        allowance_remaining=max(0, daily_allowance - used),
        allowance_resets_at=(day + 1) * DAY_MS / 1000.0,
        age_confirmed=age_confirmed_at is not None,
    )


def _check_id(value: str, name: str, limit: int) -> str:
    if not value or len(value) > limit or not value.isprintable() or value.strip() != value:
        raise TalosError("invalid_request", f"{name} must be 1 to {limit} printable characters", field=name)
    return value


def _check_credits(value: int, name: str, *, positive: bool) -> int:
    if value < (1 if positive else 0) or value > MAX_CREDITS:
        low = "positive" if positive else "zero or more"
        raise TalosError("invalid_request", f"{name} must be {low} and at most {MAX_CREDITS}", field=name)
    return value


# -- statements, built once --------------------------------------------------------------
class _IdList(TypeDecorator[list[str]]):
    """A list of ids as one bound parameter: a text[] on PostgreSQL, a JSON array on SQLite.

    One parameter, whatever the length, keeps each statement's SQL the same from batch to
    batch, so it is prepared once (``IN (:a, :b, ...)`` would be a new statement per length).
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(String))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        values = list(value or ())
        return values if dialect.name == "postgresql" else json.dumps(values)


def _ids(name: str, dialect: str) -> Select[Any]:
    """The ids bound as ``name``, as a one-column subquery (index-friendly on both stores)."""
    param = bindparam(name, type_=_IdList())
    if dialect == "postgresql":
        return select(func.unnest(param))
    return select(literal_column("value")).select_from(func.json_each(param))


@dataclass(frozen=True)
class _BatchReads:
    """How a batch reads what it will change."""

    # One statement: the batch's accounts, each joined with the batch's holds on it.
    together: Select[Any]
    # Pessimistic, two statements: lock the accounts in id order, then the holds in job order
    # (an optimistic batch may change a hold without its account's lock; this waits for it).
    lock_accounts: Select[Any]
    holds: Select[Any]


def _batch_reads(dialect: str) -> _BatchReads:
    # The accounts of a batch: those named by its reserves and grants, and those its holds are on.
    account_ids = union(
        _ids("accs", dialect), select(holds.c.account_id).where(holds.c.job_id.in_(_ids("jobs", dialect)))
    )
    batch_holds = and_(holds.c.account_id == accounts.c.id, holds.c.job_id.in_(_ids("jobs", dialect)))
    together = (
        select(
            *[column.label("a_" + column.name) for column in accounts.c],
            *[column.label("h_" + column.name) for column in holds.c],
        )
        .select_from(accounts.outerjoin(holds, batch_holds))
        .where(accounts.c.id.in_(account_ids))
    )
    return _BatchReads(
        together=together,
        lock_accounts=select(accounts)
        .where(accounts.c.id.in_(account_ids))
        .order_by(accounts.c.id)
        .with_for_update(),
        holds=select(holds)
        .where(holds.c.job_id.in_(_ids("jobs", dialect)))
        .order_by(holds.c.job_id)
        .with_for_update(),
    )


_INSERT_HOLDS = insert(holds)
_UPDATE_HOLD = (
    update(holds)
    .where(holds.c.job_id == bindparam("b_job_id"))
    .values(state=bindparam("b_state"), resolved_at=bindparam("b_resolved_at"), reason=bindparam("b_reason"))
)
_UPDATE_ACCOUNT = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"))
    .values(
        balance=bindparam("b_balance"),
        daily_allowance=bindparam("b_daily_allowance"),
        allowance_day=bindparam("b_allowance_day"),
        allowance_used=bindparam("b_allowance_used"),
        age_confirmed_at=bindparam("b_age_confirmed_at"),
    )
)
_INSERT_LEDGER = insert(ledger)
_READ_ACCOUNT = select(accounts).where(accounts.c.id == bindparam("id"))
_AUTHENTICATE = (
    select(api_keys.c.key_hash, accounts)
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == bindparam("hash"), api_keys.c.revoked_at.is_(None))
)
_AUTHENTICATE_NODE = select(node_tokens).where(
    node_tokens.c.token_hash == bindparam("hash"), node_tokens.c.revoked_at.is_(None)
)
_EXPIRED_HOLDS = (
    select(holds.c.job_id)
    .where(holds.c.state == HELD, holds.c.expires_at <= bindparam("now"))
    .order_by(holds.c.expires_at)
    .limit(bindparam("limit"))
)


_READ_HOLD = select(holds).where(holds.c.job_id == bindparam("job_id"))
_POSTED = select(ledger.c.txn).where(ledger.c.txn.in_(bindparam("txns", expanding=True))).distinct()


def _first(statement: Select[Any], params: dict[str, Any], conn: Connection) -> Row[Any] | None:
    """The first row a read finds (for :meth:`Database.read`)."""
    return conn.execute(statement, params).first()


def _scalars(statement: Select[Any], params: dict[str, Any], conn: Connection) -> Sequence[Any]:
    """The first column of every row a read finds (for :meth:`Database.read`)."""
    return conn.execute(statement, params).scalars().all()


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
        self.batch_max = max(1, batch_max)
        self.batch_workers = max(1, batch_workers)
        self.clock = clock
        self.dialect = db.name
        self.optimistic = optimistic and self.dialect == "postgresql"
        self._queue: collections.deque[_Op] = collections.deque()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._reads = _batch_reads(self.dialect)
        # Counters for the closing log line: how well operations group into batches.
        self.batches = 0
        self.batched_ops = 0
        self.batch_seconds = 0.0
        self.retried_batches = 0

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
        return await self.db.write(functools.partial(schema.migrate, now_ms=self._now_ms()))

    async def schema_version(self) -> int:
        def version(conn: Connection) -> int:
            return int(conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0)

        return await self.db.read(version)

    def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._worker()) for _ in range(self.batch_workers)]

    def start_sweeper(self, every_seconds: float) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(every_seconds))

    async def close(self) -> None:
        """Finishes the operations already queued, stops the sweeper, closes the database."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._wakeup.set()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
            log.info(
                "ledger closed",
                extra={
                    "batches": self.batches,
                    "operations": self.batched_ops,
                    "batch_ms": round(1000 * self.batch_seconds / max(1, self.batches), 2),
                    "retried": self.retried_batches,
                },
            )
        await self.db.close()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- accounts and credentials -----------------------------------------------------------
    async def create_account(self, credits: int = 0, daily_allowance: int = 0) -> tuple[str, str]:
        """A new account with its first API key; returns (account_id, api_key)."""
        _check_credits(credits, "credits", positive=False)
        _check_credits(daily_allowance, "daily_allowance", positive=False)
        account_id = keys.new_account_id()
        api_key = keys.new_api_key()
        key_hash = keys.digest(api_key)
        now_ms = self._now_ms()

        def create(conn: Connection) -> None:
            conn.execute(
                insert(accounts).values(
                    id=account_id,
                    balance=credits,
                    daily_allowance=daily_allowance,
                    allowance_day=now_ms // DAY_MS,
                    allowance_used=0,
                    created_at=now_ms,
                )
            )
            conn.execute(insert(api_keys).values(key_hash=key_hash, account_id=account_id, created_at=now_ms))
            if credits:
                work = _Work({}, {}, now_ms, set())
                txn = f"grant:{uuid.uuid4().hex}"
                work.post(txn, "grant", None, (SYS_GRANTS, -credits), (account_id, credits))
                conn.execute(_INSERT_LEDGER, work.entries)

        await self.db.write(create)
        log.info(
            "account created",
            extra={"account_id": account_id, "credits": credits, "daily_allowance": daily_allowance},
        )
        return account_id, api_key

    async def create_api_key(self, account_id: str) -> str:
        _check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        api_key = keys.new_api_key()
        row = {"key_hash": keys.digest(api_key), "account_id": account_id, "created_at": self._now_ms()}

        def create(conn: Connection) -> None:
            if conn.execute(_READ_ACCOUNT, {"id": account_id}).first() is None:
                raise TalosError("not_found", "no such account")
            conn.execute(insert(api_keys).values(row))

        await self.db.write(create)
        log.info("api key created", extra={"account_id": account_id})
        return api_key

    async def revoke_api_keys(self, account_id: str) -> int:
        _check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        now_ms = self._now_ms()

        def revoke(conn: Connection) -> int:
            if conn.execute(_READ_ACCOUNT, {"id": account_id}).first() is None:
                raise TalosError("not_found", "no such account")
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_ms)
            )
            return int(result.rowcount or 0)

        revoked = await self.db.write(revoke)
        log.info("api keys revoked", extra={"account_id": account_id, "revoked": revoked})
        return revoked

    async def authenticate(self, api_key: str) -> AccountView:
        if not keys.plausible(api_key, keys.API_KEY_PREFIX):
            raise TalosError("invalid_api_key", "unknown or revoked API key")
        presented = keys.digest(api_key)
        row = await self.db.read(functools.partial(_first, _AUTHENTICATE, {"hash": presented}))
        if row is None or not keys.matches(row.key_hash, presented):
            raise TalosError("invalid_api_key", "unknown or revoked API key")
        return self._row_view(row)

    async def get_account(self, account_id: str) -> AccountView:
        _check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        row = await self.db.read(functools.partial(_first, _READ_ACCOUNT, {"id": account_id}))
        if row is None:
            raise TalosError("not_found", "no such account")
        return self._row_view(row)

    def _row_view(self, row: Row[Any]) -> AccountView:
        return _account_view(
            row.id,
            row.balance,
            row.daily_allowance,
            row.allowance_day,
            row.allowance_used,
            row.age_confirmed_at,
            self._now_ms() // DAY_MS,
        )

    async def create_node_token(self, name: str = "") -> tuple[str, str]:
        if len(name) > MAX_NAME or not name.isprintable():
            raise TalosError("invalid_request", f"name must be at most {MAX_NAME} printable characters")
        node_id = keys.new_node_id()
        token = keys.new_node_token()
        statement = insert(node_tokens).values(
            node_id=node_id, name=name or node_id, token_hash=keys.digest(token), created_at=self._now_ms()
        )
        await self.db.write(lambda conn: conn.execute(statement))
        log.info("node token created", extra={"node_id": node_id})
        return node_id, token

    async def authenticate_node(self, token: str) -> NodeIdentity:
        if not keys.plausible(token, keys.NODE_TOKEN_PREFIX):
            raise TalosError("invalid_api_key", "unknown or revoked node token")
        presented = keys.digest(token)
        row = await self.db.read(functools.partial(_first, _AUTHENTICATE_NODE, {"hash": presented}))
        if row is None or not keys.matches(row.token_hash, presented):
            raise TalosError("invalid_api_key", "unknown or revoked node token")
        return NodeIdentity(row.node_id, row.name)

    async def revoke_node_token(self, node_id: str) -> bool:
        _check_id(node_id, "node_id", MAX_ACCOUNT_ID)
        now_ms = self._now_ms()

        def revoke(conn: Connection) -> bool:
            exists = conn.execute(
                select(node_tokens.c.node_id).where(node_tokens.c.node_id == node_id)
            ).first()
            if exists is None:
                raise TalosError("not_found", "no such node")
            result = conn.execute(
                update(node_tokens)
                .where(node_tokens.c.node_id == node_id, node_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now_ms)
            )
            return bool(result.rowcount)

        revoked = await self.db.write(revoke)
        log.info("node token revoked", extra={"node_id": node_id, "revoked": revoked})
        return revoked

    # -- credits: every change goes through the batch engine ---------------------------------
    async def reserve(self, job_id: str, account_id: str) -> tuple[HoldView, AccountView]:
        """Holds one price for the job (allowance first); the same job id gives the same hold."""
        _check_id(job_id, "job_id", MAX_JOB_ID)
        _check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        result: tuple[HoldView, AccountView] = await self._submit(
            "reserve", job_id=job_id, account_id=account_id
        )
        return result

    async def capture(self, job_id: str) -> tuple[HoldView, AccountView]:
        """Charges the job's hold; idempotent; an expired hold is not charged (hold_expired)."""
        _check_id(job_id, "job_id", MAX_JOB_ID)
        result: tuple[HoldView, AccountView] = await self._submit("capture", job_id=job_id)
        return result

    async def release(self, job_id: str, reason: str = "released") -> tuple[HoldView, AccountView]:
        """Returns the job's hold; a hold resolved before is answered as it is."""
        _check_id(job_id, "job_id", MAX_JOB_ID)
        reason = reason or "released"
        _check_id(reason, "reason", MAX_REASON)
        result: tuple[HoldView, AccountView] = await self._submit("release", job_id=job_id, reason=reason)
        return result

    async def expire(self, job_id: str) -> tuple[HoldView, AccountView] | None:
        """Releases the job's hold as EXPIRED if it is still held past its time."""
        result: tuple[HoldView, AccountView] | None = await self._submit("expire", job_id=job_id)
        return result

    async def grant(self, account_id: str, credits: int) -> AccountView:
        _check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        _check_credits(credits, "credits", positive=True)
        view: AccountView = await self._submit(
            "grant", account_id=account_id, amount=credits, txn=f"grant:{uuid.uuid4().hex}"
        )
        log.info("credits granted", extra={"account_id": account_id, "credits": credits})
        return view

    async def set_allowance(self, account_id: str, daily_allowance: int) -> AccountView:
        _check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        _check_credits(daily_allowance, "daily_allowance", positive=False)
        view: AccountView = await self._submit("set_allowance", account_id=account_id, amount=daily_allowance)
        log.info("allowance set", extra={"account_id": account_id, "daily_allowance": daily_allowance})
        return view

    async def confirm_age(self, account_id: str) -> AccountView:
        _check_id(account_id, "account_id", MAX_ACCOUNT_ID)
        view: AccountView = await self._submit("confirm_age", account_id=account_id)
        return view

    async def _submit(
        self,
        kind: str,
        job_id: str = "",
        account_id: str = "",
        amount: int = 0,
        reason: str = "",
        txn: str = "",
    ) -> Any:
        if self._closing:
            raise TalosError("unavailable", "billing is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Op(kind, future, job_id, account_id, amount, reason, txn))
        self._wakeup.set()
        return await future

    # -- the batch engine --------------------------------------------------------------------
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
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(TalosError("internal", "ledger error"))
            self.batch_seconds += time.perf_counter() - started

    async def _run(self, batch: list[_Op]) -> None:
        delay = 0.002
        for attempt in range(1, _BATCH_ATTEMPTS + 1):
            try:
                results, notes = await self._apply(batch, optimistic=self.optimistic and attempt == 1)
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
            for op, result in zip(batch, results, strict=True):
                if op.future.done():  # the caller went away; the operation stands (idempotent)
                    continue
                if isinstance(result, TalosError):
                    op.future.set_exception(result)
                else:
                    op.future.set_result(result)
            for level, message, extra in notes:
                log.log(level, message, extra=extra)
            return
        if len(batch) > 1:
            # One operation may be what fails: give each its own transaction.
            for op in batch:
                await self._run([op])
            return
        op = batch[0]
        log.error("ledger operation failed", extra={"kind": op.kind, "job_id": op.job_id or None})
        if not op.future.done():
            op.future.set_exception(TalosError("unavailable", "the ledger store is unavailable"))

    async def _apply(self, batch: Sequence[_Op], *, optimistic: bool) -> tuple[list[Any], list[_Note]]:
        """One transaction for the whole batch; returns each operation's answer and its log lines.

        ``optimistic`` (PostgreSQL's first try): one REPEATABLE READ read without locks.
        Otherwise PostgreSQL locks accounts then holds before deciding; SQLite's writer
        already holds the database's write lock. See the module's docstring.
        """
        now_ms = self._now_ms()
        params = {
            "accs": sorted({op.account_id for op in batch if op.account_id}),
            "jobs": sorted({op.job_id for op in batch if op.job_id}),
        }
        pessimistic = self.dialect == "postgresql" and not optimistic
        # First try on PostgreSQL: one snapshot, no locks; PostgreSQL refuses (serialization
        # failure) to let us update a row someone changed after our snapshot, and we go again.
        transaction = functools.partial(self._transaction, batch, params, now_ms, pessimistic)
        return await self.db.write(transaction, snapshot=optimistic)

    def _transaction(
        self,
        batch: Sequence[_Op],
        params: dict[str, list[str]],
        now_ms: int,
        pessimistic: bool,
        conn: Connection,
    ) -> tuple[list[Any], list[_Note]]:
        """The body of a batch's transaction: read, apply in Python, write; all synchronous.

        On SQLite this runs on the writer thread (touch no asyncio object here: the
        operations' futures are settled, and their log lines written, by :meth:`_run`,
        back on the event loop once the batch has committed).
        """
        found: dict[str, _Account] = {}
        hold_map: dict[str, _Hold] = {}
        if pessimistic:
            for row in conn.execute(self._reads.lock_accounts, params):
                found[row.id] = _Account(row)
            if params["jobs"]:
                for row in conn.execute(self._reads.holds, params):
                    if row.account_id not in found:
                        # Made after the lock statement read the holds: again, under the lock.
                        raise _RetryBatch(row.job_id)
                    hold_map[row.job_id] = _Hold.from_row(row)
        else:
            for row in conn.execute(self._reads.together, params):
                if row.a_id not in found:
                    found[row.a_id] = _Account(row, "a_")
                if row.h_job_id is not None:
                    hold_map[row.h_job_id] = _Hold.from_row(row, "h_")
        grants = [op.txn for op in batch if op.kind == "grant"]
        posted = set(conn.execute(_POSTED, {"txns": grants}).scalars()) if grants else set()
        work = _Work(found, hold_map, now_ms, posted)
        results = [self._apply_one(work, op) for op in batch]
        self._flush(conn, work)
        return results, work.notes

    def _flush(self, conn: Connection, work: _Work) -> None:
        ordered = sorted(work.holds.values(), key=lambda h: h.job_id)
        new_holds = [h.insert_row() for h in ordered if h.is_new]
        changed_holds = [h.update_params() for h in ordered if h.dirty and not h.is_new]
        changed_accounts = [a.params() for a in sorted(work.accounts.values(), key=lambda a: a.id) if a.dirty]
        # Accounts before holds, each in key order: the order the pessimistic path locks them,
        # so concurrent batches wait for each other instead of deadlocking.
        if changed_accounts:
            conn.execute(_UPDATE_ACCOUNT, changed_accounts)
        if new_holds:
            conn.execute(_INSERT_HOLDS, new_holds)
        if changed_holds:
            conn.execute(_UPDATE_HOLD, changed_holds)
        if work.entries:
            conn.execute(_INSERT_LEDGER, work.entries)

    def _apply_one(self, work: _Work, op: _Op) -> Any:
        kind = op.kind
        if kind == "reserve":
            return self._do_reserve(work, op.job_id, op.account_id)
        if kind == "capture":
            return self._do_capture(work, op.job_id)
        if kind == "release":
            return self._do_release(work, op.job_id, op.reason, expire=False)
        if kind == "expire":
            return self._do_release(work, op.job_id, "expired", expire=True)
        account = work.accounts.get(op.account_id)
        if account is None:
            return TalosError("not_found", "no such account")
        if kind == "grant":
            # Jobs are idempotent by job id; a grant by its operation id, so a batch retried
            # after a commit whose answer was lost (it did commit) does not grant twice.
            if op.txn not in work.posted:
                account.balance += op.amount
                account.dirty = True
                work.post(op.txn, "grant", None, (SYS_GRANTS, -op.amount), (account.id, op.amount))
        elif kind == "set_allowance":
            account.daily_allowance = op.amount
            account.dirty = True
        elif kind == "confirm_age":
            if account.age_confirmed_at is None:
                account.age_confirmed_at = work.now_ms
                account.dirty = True
        else:  # pragma: no cover - a programming error
            raise ValueError(kind)
        return account.view(work.day)

    def _do_reserve(self, work: _Work, job_id: str, account_id: str) -> Any:
        hold = work.holds.get(job_id)
        if hold is not None:
            if hold.account_id != account_id:
                return TalosError(
                    "idempotency_conflict", "this job id belongs to another account", field="job_id"
                )
            return hold.view(), work.accounts[hold.account_id].view(work.day)
        account = work.accounts.get(account_id)
        if account is None:
            return TalosError("not_found", "no such account")
        day = work.day
        used = account.allowance_used if account.allowance_day == day else 0
        from_allowance = min(self.price, max(0, account.daily_allowance - used))
        from_balance = self.price - from_allowance
        if account.balance < from_balance:
            return TalosError(
                "insufficient_credits",
                f"an image costs {self.price} credits; {account.balance + from_allowance} available",
            )
        account.allowance_day = day
        account.allowance_used = used + from_allowance
        account.balance -= from_balance
        account.dirty = True
        hold = _Hold(
            job_id,
            account_id,
            self.price,
            from_allowance,
            from_balance,
            day,
            HELD,
            work.now_ms,
            work.now_ms + self.hold_ttl_ms,
            is_new=True,
        )
        work.holds[job_id] = hold
        work.post(
            "reserve:" + job_id,
            "reserve",
            job_id,
            (account_id, -from_balance),
            (SYS_ALLOWANCE, -from_allowance),
            (SYS_HOLDS, self.price),
        )
        if log.isEnabledFor(logging.DEBUG):
            work.note(
                logging.DEBUG,
                "reserved",
                job_id=job_id,
                account_id=account_id,
                from_allowance=from_allowance,
                from_balance=from_balance,
            )
        return hold.view(), account.view(day)

    def _do_capture(self, work: _Work, job_id: str) -> Any:
        hold = work.holds.get(job_id)
        if hold is None:
            return TalosError("not_found", "no hold for this job")
        account = work.accounts[hold.account_id]
        if hold.state == CAPTURED:
            return hold.view(), account.view(work.day)
        if hold.state == EXPIRED:
            return TalosError("hold_expired", "the hold expired before the capture; nothing was charged")
        if hold.state == RELEASED:
            return TalosError("invalid_request", "the hold was released; nothing was charged")
        if hold.expires_at <= work.now_ms:
            self._return_hold(work, hold, EXPIRED, "expired")
            return TalosError("hold_expired", "the hold expired before the capture; nothing was charged")
        hold.state = CAPTURED
        hold.resolved_at = work.now_ms
        hold.dirty = True
        work.post(
            "capture:" + job_id, "capture", job_id, (SYS_HOLDS, -hold.amount), (SYS_REVENUE, hold.amount)
        )
        if log.isEnabledFor(logging.DEBUG):
            work.note(logging.DEBUG, "captured", job_id=job_id, amount=hold.amount)
        return hold.view(), account.view(work.day)

    def _do_release(self, work: _Work, job_id: str, reason: str, *, expire: bool) -> Any:
        hold = work.holds.get(job_id)
        if hold is None:
            return None if expire else TalosError("not_found", "no hold for this job")
        account = work.accounts[hold.account_id]
        if hold.state == HELD and (not expire or hold.expires_at <= work.now_ms):
            self._return_hold(work, hold, EXPIRED if expire else RELEASED, reason)
        return hold.view(), account.view(work.day)

    def _return_hold(self, work: _Work, hold: _Hold, state: int, reason: str) -> None:
        account = work.accounts[hold.account_id]
        account.balance += hold.from_balance
        # Allowance goes back to the day it came from; a day that has passed is gone.
        if hold.from_allowance and account.allowance_day == hold.allowance_day:
            account.allowance_used = max(0, account.allowance_used - hold.from_allowance)
        account.dirty = True
        hold.state = state
        hold.resolved_at = work.now_ms
        hold.reason = reason
        hold.dirty = True
        kind = "expire" if state == EXPIRED else "release"
        work.post(
            f"{kind}:{hold.job_id}",
            kind,
            hold.job_id,
            (SYS_HOLDS, -hold.amount),
            (account.id, hold.from_balance),
            (SYS_ALLOWANCE, hold.from_allowance),
        )
        work.note(
            logging.INFO,
            "hold returned",
            job_id=hold.job_id,
            account_id=account.id,
            state="expired" if state == EXPIRED else "released",
            reason=reason,
            from_allowance=hold.from_allowance,
            from_balance=hold.from_balance,
        )

    # -- expiry -----------------------------------------------------------------------------
    async def sweep(self, limit: int = 500) -> int:
        """Expires every hold past its time; returns how many were expired."""
        total = 0
        while True:
            params = {"now": self._now_ms(), "limit": limit}
            jobs: Sequence[str] = await self.db.read(functools.partial(_scalars, _EXPIRED_HOLDS, params))
            if not jobs:
                return total
            outcomes = await asyncio.gather(*(self.expire(job) for job in jobs), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is not None and outcome[0].state == EXPIRED:
                    total += 1
            if len(jobs) < limit:
                return total

    async def _sweep_forever(self, every_seconds: float) -> None:
        """Sweeps every ``every_seconds`` until :meth:`close` cancels it."""
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

    # -- checking the books ------------------------------------------------------------------
    async def hold(self, job_id: str) -> HoldView | None:
        row = await self.db.read(functools.partial(_first, _READ_HOLD, {"job_id": job_id}))
        return None if row is None else _Hold.from_row(row).view()

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
        return await self.db.read(_audit, snapshot=True)


def _audit(conn: Connection) -> AuditReport:
    """The audit's checks, on one snapshot of the books."""
    report = AuditReport()
    totals = (conn.execute(select(func.coalesce(func.sum(ledger.c.amount), 0), func.count()))).one()
    report.ledger_sum, report.entries = int(totals[0]), int(totals[1])
    if report.ledger_sum != 0:
        report.problems.append(f"ledger entries sum to {report.ledger_sum}, not 0")
    unbalanced = conn.execute(
        select(ledger.c.txn, func.sum(ledger.c.amount))
        .group_by(ledger.c.txn)
        .having(func.sum(ledger.c.amount) != 0)
        .limit(20)
    )
    for txn, total in unbalanced:
        report.problems.append(f"operation {txn} sums to {total}")
    by_account = (
        select(ledger.c.account, func.sum(ledger.c.amount).label("total"))
        .group_by(ledger.c.account)
        .subquery()
    )
    mismatched = conn.execute(
        select(accounts.c.id, accounts.c.balance, func.coalesce(by_account.c.total, 0))
        .select_from(accounts.outerjoin(by_account, by_account.c.account == accounts.c.id))
        .where(accounts.c.balance != func.coalesce(by_account.c.total, 0))
        .limit(20)
    )
    for account_id, balance, total in mismatched:
        report.problems.append(f"account {account_id} balance {balance} but ledger says {total}")

    def ledger_total(account: str) -> int:
        value = (
            conn.execute(
                select(func.coalesce(func.sum(ledger.c.amount), 0)).where(ledger.c.account == account)
            )
        ).scalar()
        return int(value or 0)

    def hold_total(column: Any, *states: int) -> int:
        value = (
            conn.execute(select(func.coalesce(func.sum(column), 0)).where(holds.c.state.in_(states)))
        ).scalar()
        return int(value or 0)

    report.held = hold_total(holds.c.amount, HELD)
    if (held_ledger := ledger_total(SYS_HOLDS)) != report.held:
        report.problems.append(f"holds in ledger {held_ledger} but open holds total {report.held}")
    report.revenue = hold_total(holds.c.amount, CAPTURED)
    if (revenue_ledger := ledger_total(SYS_REVENUE)) != report.revenue:
        report.problems.append(
            f"revenue in ledger {revenue_ledger} but captured holds total {report.revenue}"
        )
    allowance_spent = hold_total(holds.c.from_allowance, HELD, CAPTURED)
    if (allowance_ledger := ledger_total(SYS_ALLOWANCE)) != -allowance_spent:
        report.problems.append(
            f"allowance in ledger {allowance_ledger} but holds took {allowance_spent} of it"
        )
    captured = conn.execute(select(func.count()).where(holds.c.state == CAPTURED).select_from(holds))
    captures = conn.execute(select(func.count(func.distinct(ledger.c.txn))).where(ledger.c.kind == "capture"))
    if (n_held := int(captured.scalar() or 0)) != (n_txn := int(captures.scalar() or 0)):
        report.problems.append(f"{n_held} captured holds but {n_txn} capture operations")
    # Allowance used on an account's day = what its holds of that day still take.
    by_day = (
        select(
            holds.c.account_id,
            holds.c.allowance_day,
            func.sum(holds.c.from_allowance).label("spent"),
        )
        .where(holds.c.state.in_((HELD, CAPTURED)))
        .group_by(holds.c.account_id, holds.c.allowance_day)
        .subquery()
    )
    wrong_allowance = conn.execute(
        select(accounts.c.id, accounts.c.allowance_used, func.coalesce(by_day.c.spent, 0))
        .select_from(
            accounts.outerjoin(
                by_day,
                and_(
                    by_day.c.account_id == accounts.c.id,
                    by_day.c.allowance_day == accounts.c.allowance_day,
                ),
            )
        )
        .where(accounts.c.allowance_used != func.coalesce(by_day.c.spent, 0))
        .limit(20)
    )
    for account_id, used, spent in wrong_allowance:
        report.problems.append(f"account {account_id} allowance used {used} but its holds take {spent}")
    return report
