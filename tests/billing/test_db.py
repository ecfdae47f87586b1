"""How transactions run: whole, on SQLite's one writer thread; rolled back when they raise."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select

from talos_billing import schema
from talos_billing.config import Settings
from talos_billing.db import SqliteDatabase
from talos_billing.store import Store


def _where(conn: Connection) -> tuple[str, int]:
    """The thread a transaction runs on and the id of its DBAPI connection."""
    return threading.current_thread().name, id(conn.connection.dbapi_connection)


async def test_sqlite_writes_run_whole_on_one_thread_and_one_connection(tmp_path: Path) -> None:
    store = await Store.open(Settings(data_dir=tmp_path))
    try:
        assert isinstance(store.db, SqliteDatabase)
        account_id, _ = await store.create_account(credits=1000)
        # Batches, plain writes and direct transactions, all at once.
        await asyncio.gather(
            *(store.reserve(f"job-{i}", account_id) for i in range(20)),
            *(store.create_node_token(f"n{i}") for i in range(5)),
        )
        places = set(await asyncio.gather(*(store.db.write(_where) for _ in range(10))))
        assert len(places) == 1
        ((thread, _),) = places
        assert thread.startswith("billing-sqlite-writer") and thread != threading.current_thread().name
        assert store.db.writer.pool.checkedout() == 0
    finally:
        await store.close()
    await store.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        await store.db.write(_where)


async def test_sqlite_reads_and_the_event_loop_never_wait_for_the_writer(tmp_path: Path) -> None:
    store = await Store.open(Settings(data_dir=tmp_path))
    try:
        account_id, _ = await store.create_account(credits=36)
        inside, release = threading.Event(), threading.Event()

        def slow(conn: Connection) -> None:
            conn.execute(select(schema.accounts.c.id))
            inside.set()
            assert release.wait(10), "the test never released the writer"

        writing = asyncio.create_task(store.db.write(slow))
        assert await asyncio.to_thread(inside.wait, 10)
        queued = asyncio.create_task(store.reserve("job-1", account_id))
        # The writer holds SQLite's write lock; the loop and readers carry on (WAL).
        assert (await asyncio.wait_for(store.get_account(account_id), 5)).balance == 36
        await asyncio.sleep(0.05)
        assert not queued.done()  # writes queue for the one writer, in order
        release.set()
        await writing
        hold, account = await asyncio.wait_for(queued, 5)
        assert hold.job_id == "job-1" and account.balance == 18
    finally:
        release.set()
        await store.close()


async def test_a_transaction_that_raises_leaves_nothing(store: Store) -> None:
    account_id, _ = await store.create_account(credits=5)

    def half_done(conn: Connection) -> None:
        conn.execute(insert(schema.api_keys).values(key_hash="x" * 64, account_id=account_id, created_at=1))
        raise LookupError("changed its mind")

    with pytest.raises(LookupError):
        await store.db.write(half_done)
    rows = await store.db.read(lambda conn: conn.execute(select(schema.api_keys.c.key_hash)).scalars().all())
    assert "x" * 64 not in rows
    # The writer is free again: the next operations go through.
    assert (await store.grant(account_id, 5)).balance == 10
    assert (await store.audit()).ok


async def test_a_url_naming_aiosqlite_still_writes_on_the_writer_thread(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    store = await Store.open(Settings(data_dir=tmp_path, database_url=url))
    try:
        assert isinstance(store.db, SqliteDatabase)
        account_id, _ = await store.create_account(credits=18)
        assert (await store.reserve("job", account_id))[1].balance == 0
    finally:
        await store.close()
