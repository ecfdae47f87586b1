"""Tables and versioned migrations, the same on SQLite and PostgreSQL.

Amounts are whole credits (BIGINT); times are integer milliseconds since the epoch, so
both stores compare them the same way. The ledger is append-only (a trigger refuses
UPDATE and DELETE) and every operation's entries sum to zero: user accounts are ledger
accounts named by their id, the counterparties are the system accounts of
:mod:`talos_billing.rules`. A hold's ``state`` is a :class:`~talos_billing.rules.HoldState`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    select,
    text,
)

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    # Credits available now (held credits already taken out).
    Column("balance", BigInteger, nullable=False),
    Column("daily_allowance", BigInteger, nullable=False),
    # The UTC day (days since the epoch) allowance_used counts for.
    Column("allowance_day", Integer, nullable=False),
    # Allowance credits held or charged on allowance_day.
    Column("allowance_used", BigInteger, nullable=False),
    Column("age_confirmed_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("balance >= 0", name="accounts_balance_not_negative"),
    CheckConstraint("daily_allowance >= 0", name="accounts_allowance_not_negative"),
    CheckConstraint("allowance_used >= 0", name="accounts_allowance_used_not_negative"),
)

api_keys = Table(
    "api_keys",
    metadata,
    # SHA-256 of the key, hex; the key itself is never stored.
    Column("key_hash", String(64), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

node_tokens = Table(
    "node_tokens",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

holds = Table(
    "holds",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("from_allowance", BigInteger, nullable=False),
    Column("from_balance", BigInteger, nullable=False),
    # The UTC day the allowance part came from (released allowance returns to it).
    Column("allowance_day", Integer, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("resolved_at", BigInteger, nullable=True),
    Column("reason", String(64), nullable=True),
    CheckConstraint("amount = from_allowance + from_balance", name="holds_split_adds_up"),
    # The HoldState numbers as released in version 1: a new state needs a new migration.
    CheckConstraint("state BETWEEN 1 AND 4", name="holds_state_known"),
    Index("holds_state_expires", "state", "expires_at"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    # One operation (reserve:<job>, capture:<job>, grant:<id>, ...); its entries sum to zero.
    Column("txn", String(160), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("account", String(64), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("job_id", String(128), nullable=True),
    Column("at", BigInteger, nullable=False),
)

V1_TABLES = [accounts, api_keys, node_tokens, holds, ledger]

_SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger "
    "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
    "CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger "
    "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
]
_POSTGRES_APPEND_ONLY = [
    "CREATE OR REPLACE FUNCTION talos_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$",
    "CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger "
    "FOR EACH ROW EXECUTE FUNCTION talos_ledger_append_only()",
]


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=V1_TABLES)
    statements = _POSTGRES_APPEND_ONLY if conn.dialect.name == "postgresql" else _SQLITE_APPEND_ONLY
    for statement in statements:
        conn.exec_driver_sql(statement)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


# Append only: a released version is never edited, a change is a new version.
MIGRATIONS: list[Migration] = [
    Migration(1, "accounts, api keys, node tokens, holds, append-only ledger", _v1),
]
LATEST = MIGRATIONS[-1].version


def migrate(conn: Connection, now_ms: int) -> list[int]:
    """Applies pending migrations inside the caller's transaction; returns the versions applied.

    Two processes starting at once do not both migrate: PostgreSQL takes an advisory
    lock for the transaction, SQLite's writer lock (BEGIN IMMEDIATE) already serialises.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7461727)"))  # "talos" billing schema lock
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(select(schema_version.c.version)).scalars().all()
    done = set(current)
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        migration.apply(conn)
        conn.execute(
            schema_version.insert().values(
                version=migration.version, description=migration.description, applied_at=now_ms
            )
        )
        applied.append(migration.version)
    return applied
