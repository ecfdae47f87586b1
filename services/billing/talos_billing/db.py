"""Where the store's transactions run: SQLite (WAL, one writer thread) or PostgreSQL (asyncpg).

Everything above this module is the same code for both. The store writes each transaction
as one synchronous function over a SQLAlchemy :class:`~sqlalchemy.Connection` and hands it
to :meth:`Database.write` (or :meth:`Database.read`); the differences live here:

* SQLite (pysqlite): the whole transaction is ONE call into a dedicated writer thread,
  which runs ``BEGIN IMMEDIATE``, the statements, the Python in between and ``COMMIT``
  synchronously. An async driver (aiosqlite) hops to its thread and back for every DBAPI
  call, about sixteen hops for one reserve, and those hops, not the disk, were most of a
  write's latency. One thread, one connection: write transactions queue for it instead of
  busy-waiting on the lock, and the lock is held only while the thread works, never across
  an ``await``. Reads go the same way through a small pool of reader threads.
* PostgreSQL (asyncpg): the same function through ``AsyncConnection.run_sync`` inside an
  async transaction, one pool for reads and writes, row locks (or a REPEATABLE READ
  snapshot) for safety.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from talos_billing.config import Settings

T = TypeVar("T")

_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}
# SQLite reads run on this many threads, each with its own connection (WAL: readers never
# wait for the writer, nor it for them).
SQLITE_READERS = 4


def database_url(settings: Settings) -> URL:
    """The configured URL with the driver the store uses: asyncpg, or pysqlite on its own threads."""
    url = make_url(settings.resolved_database_url())
    backend = url.get_backend_name()
    if backend == "postgresql" and url.get_driver_name() != "asyncpg":
        url = url.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite" and url.drivername != "sqlite+pysqlite":
        url = url.set(drivername="sqlite+pysqlite")  # sqlite://, sqlite+aiosqlite://
    elif backend not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
    return url


def describe(url: URL) -> str:
    """The URL without its password, fit for a log line."""
    return url.render_as_string(hide_password=True)


class Database(ABC):
    """Runs the store's transactions; each is a synchronous ``fn(connection)``.

    ``fn`` does database work and plain Python only: on SQLite it runs on another thread,
    so it must not touch asyncio objects. A SQLite transaction, once handed over, runs to
    its end even if the task awaiting it is cancelled.
    """

    #: "sqlite" or "postgresql"
    name: str

    @abstractmethod
    async def write(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        """Runs ``fn`` in one write transaction and commits (rolls back if it raises).

        ``snapshot`` (PostgreSQL): REPEATABLE READ, no locks taken to read; updating a row
        someone else changed after the snapshot fails (serialization failure). SQLite's
        writer is alone with the database (``BEGIN IMMEDIATE``), which is stronger already.
        """

    @abstractmethod
    async def read(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        """Runs ``fn`` on a reading connection; what it changes is rolled back.

        ``snapshot``: every statement sees the same moment (SQLite's read transactions
        always do; on PostgreSQL it costs a REPEATABLE READ transaction, otherwise each
        statement is its own).
        """

    @abstractmethod
    async def close(self) -> None:
        """Closes every connection (on SQLite once the transactions handed over have run)."""


class SqliteDatabase(Database):
    """One writer thread and connection (``BEGIN IMMEDIATE``), a few reader threads."""

    name = "sqlite"

    def __init__(self, url: URL, synchronous: str) -> None:
        # Every use of a connection is one ``with engine.begin()``/``connect()`` block on a
        # thread of ours, so the pool never crosses threads with a connection in use.
        # The writer's blocks always end in COMMIT or ROLLBACK: no reset when one comes back.
        self.writer = create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_reset_on_return=None,
            # Many rows go as one executemany of a statement prepared once, not as a
            # multi-row INSERT whose text changes with the row count.
            use_insertmanyvalues=False,
        )
        self.reader = create_engine(url, pool_size=SQLITE_READERS, max_overflow=0)
        _sqlite_events(self.writer, synchronous, "BEGIN IMMEDIATE")
        _sqlite_events(self.reader, synchronous, "BEGIN")
        # One writer thread: it is the only user of the writer's connection, and transactions
        # handed to it run one after another, in the order they came.
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="billing-sqlite-writer")
        self._reader_threads = ThreadPoolExecutor(SQLITE_READERS, thread_name_prefix="billing-sqlite-reader")
        self._closed = False

    async def write(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._writer_thread, functools.partial(_write_in_thread, self.writer, fn)
        )

    async def read(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._reader_threads, functools.partial(_read_in_thread, self.reader, fn)
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the billing database is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Off the event loop: wait for the transactions already handed over (none is cut
        # short), then close the connections (SQLAlchemy opens pysqlite's file connections
        # with check_same_thread=False, so any thread may).
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._writer_thread.shutdown(wait=True)
        self._reader_threads.shutdown(wait=True)
        self.writer.dispose()
        self.reader.dispose()


def _write_in_thread(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return fn(conn)


def _read_in_thread(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:  # BEGIN on first use; the pool rolls back on return
        return fn(conn)


class PostgresDatabase(Database):
    """One asyncpg pool; each transaction's function runs through ``run_sync``."""

    name = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._snapshot = engine.execution_options(isolation_level="REPEATABLE READ")
        # Plain reads need no transaction: one round trip each, no BEGIN/ROLLBACK.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def write(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        async with (self._snapshot if snapshot else self.engine).begin() as conn:
            return await conn.run_sync(fn)

    async def read(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        if not snapshot:
            async with self._autocommit.connect() as conn:
                return await conn.run_sync(fn)
        async with self._snapshot.connect() as conn:
            try:
                return await conn.run_sync(fn)
            finally:
                await conn.rollback()

    async def close(self) -> None:
        await self.engine.dispose()


def open_database(settings: Settings) -> Database:
    """The configured store's :class:`Database` (no connection is made yet)."""
    url = database_url(settings)
    if url.get_backend_name() == "sqlite":
        return _sqlite(url, settings)
    connect_args: dict[str, Any] = {}
    if settings.database_schema:
        connect_args["server_settings"] = {"search_path": settings.database_schema}
    engine = create_async_engine(
        url,
        # Many rows go as one pipelined executemany of a statement prepared once, not as a
        # multi-row INSERT whose text (and server-side plan) changes with the row count.
        use_insertmanyvalues=False,
        pool_size=max(1, settings.pool_size),
        max_overflow=max(0, settings.pool_size),
        pool_timeout=30,
        connect_args=connect_args,
    )
    return PostgresDatabase(engine)


def _sqlite(url: URL, settings: Settings) -> SqliteDatabase:
    if not url.database or url.database == ":memory:":
        raise ValueError("the SQLite store needs a file (one writer and its readers share it)")
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    synchronous = settings.sqlite_synchronous.upper()
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {sorted(_SYNCHRONOUS)}")
    return SqliteDatabase(url, synchronous)


def _sqlite_events(engine: Engine, synchronous: str, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (pysqlite's implicit transactions would defer the lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)
