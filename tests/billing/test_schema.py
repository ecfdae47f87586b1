"""Versioned migrations, the append-only ledger, settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import DBAPIError

from talos_billing import schema
from talos_billing.config import PREFIX, Settings
from talos_billing.db import database_url
from talos_billing.store import Store
from talos_common import settings as settings_module

from .conftest import OpenStore


async def test_schema_is_versioned_and_reopening_migrates_nothing(
    store: Store, open_store: OpenStore
) -> None:
    assert await store.schema_version() == schema.LATEST
    again = await open_store()
    assert await again.migrate() == []
    rows = await again.db.read(lambda conn: conn.execute(select(schema.schema_version)).all())
    assert [row.version for row in rows] == [m.version for m in schema.MIGRATIONS]
    assert all(row.description for row in rows)


async def test_ledger_refuses_update_and_delete(store: Store) -> None:
    account_id, _ = await store.create_account(credits=10)
    for statement in (
        update(schema.ledger).where(schema.ledger.c.account == account_id).values(amount=1_000_000),
        delete(schema.ledger).where(schema.ledger.c.account == account_id),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            await store.db.write(lambda conn, statement=statement: conn.execute(statement))
    entries = await store.ledger_entries(account=account_id)
    assert [e["amount"] for e in entries] == [10]


async def test_balance_can_never_go_negative_in_the_database(store: Store) -> None:
    account_id, _ = await store.create_account(credits=5)
    negative = update(schema.accounts).where(schema.accounts.c.id == account_id).values(balance=-1)
    with pytest.raises(DBAPIError, match="accounts_balance_not_negative"):
        await store.db.write(lambda conn: conn.execute(negative))
    assert (await store.get_account(account_id)).balance == 5


async def test_audit_notices_tampering(store: Store) -> None:
    account_id, _ = await store.create_account(credits=50)
    assert (await store.audit()).ok

    def set_balance(balance: int) -> Callable[[Connection], object]:
        return lambda conn: conn.execute(
            update(schema.accounts).where(schema.accounts.c.id == account_id).values(balance=balance)
        )

    await store.db.write(set_balance(60))  # a balance changed behind the ledger's back
    report = await store.audit()
    assert not report.ok and any(account_id in problem for problem in report.problems)
    await store.db.write(set_balance(50))


def test_settings_from_environment(tmp_path: Path) -> None:
    env = {
        "TALOS_BILLING_PORT": "6000",
        "TALOS_BILLING_DATA_DIR": str(tmp_path),
        "TALOS_BILLING_HOLD_TTL_SECONDS": "30",
        "TALOS_BILLING_PRICE": "18",
    }
    loaded = settings_module.load(Settings, PREFIX, env)
    assert (loaded.port, loaded.hold_ttl_seconds, loaded.price) == (6000, 30.0, 18)
    assert loaded.resolved_database_url() == f"sqlite:///{(tmp_path / 'billing.db').resolve()}"
    assert database_url(loaded).drivername == "sqlite+pysqlite"  # run on billing's own threads
    names = settings_module.variables(Settings, PREFIX)
    assert {"TALOS_BILLING_DATABASE_URL", "TALOS_BILLING_HOST", "TALOS_BILLING_SWEEP_SECONDS"} <= set(names)
    pg = replace(loaded, database_url="postgresql://u:secret@db:5432/talos")
    assert database_url(pg).drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError):
        database_url(replace(loaded, database_url="mysql://x/y"))
