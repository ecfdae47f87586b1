"""Engines for the two stores: SQLite (WAL, one writer) and PostgreSQL (asyncpg).

Everything above this module is the same code for both. The differences live here:
SQLite writes through a single pooled connection whose transactions start with
``BEGIN IMMEDIATE`` (so two writers never interleave), reads through a small pool of
its own; PostgreSQL uses one pool for both and row locks for safety.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from talos_billing.config import Settings

_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}


def database_url(settings: Settings) -> URL:
    """The configured URL with the async driver filled in (postgresql:// → asyncpg)."""
    url = make_url(settings.resolved_database_url())
    backend = url.get_backend_name()
    if backend == "postgresql" and url.get_driver_name() != "asyncpg":
        url = url.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite" and url.get_driver_name() != "aiosqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    elif backend not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
    return url


def describe(url: URL) -> str:
    """The URL without its password, fit for a log line."""
    return url.render_as_string(hide_password=True)


def create_engines(settings: Settings) -> tuple[AsyncEngine, AsyncEngine]:
    """(writer, reader) engines; on PostgreSQL both are the same pool."""
    url = database_url(settings)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engines(url, settings)
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
    return engine, engine


def _sqlite_engines(url: URL, settings: Settings) -> tuple[AsyncEngine, AsyncEngine]:
    if not url.database or url.database == ":memory:":
        raise ValueError("the SQLite store needs a file (one writer and its readers share it)")
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    synchronous = settings.sqlite_synchronous.upper()
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {sorted(_SYNCHRONOUS)}")
    # One writer connection: write transactions queue for it instead of busy-waiting. Every
    # use is an ``engine.begin()`` block that ends in COMMIT or ROLLBACK, so the pool need not
    # roll back again when the connection comes back (with aiosqlite that is a thread hop).
    writer = create_async_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=300,
        pool_reset_on_return=None,
        use_insertmanyvalues=False,
    )
    reader = create_async_engine(url, pool_size=4, max_overflow=4, pool_timeout=30)
    _sqlite_events(writer, synchronous, "BEGIN IMMEDIATE")
    _sqlite_events(reader, synchronous, "BEGIN")
    return writer, reader


def _sqlite_events(engine: AsyncEngine, synchronous: str, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (pysqlite's implicit transactions would defer the lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)
