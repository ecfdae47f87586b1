"""Billing fixtures: the same store on SQLite (a file under tmp_path) and PostgreSQL.

PostgreSQL is the local server (127.0.0.1:5432, user postgres, database ``test``, or
``$TALOS_TEST_POSTGRES_URL``); each test gets a fresh schema there (all dropped at the
end of the session), so every test's books, and its audit, are its own. Without a
reachable server the PostgreSQL cases are skipped, except under CI=true, where that is a
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from talos.billing.v1 import billing_pb2_grpc
from talos_billing.config import Settings
from talos_billing.service import Billing, start
from talos_billing.store import Store
from talos_common.errors import TalosError, from_rpc_error

POSTGRES_URL = os.environ.get("TALOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
# 2026-11-23 12:00:00 UTC: a fixed noon, so day arithmetic in tests is plain.
NOON = 1_795_435_200.0
DAY = 86_400.0


class FakeClock:
    """A clock the test moves by hand (billing reads it for holds and allowance days)."""

    def __init__(self, start: float = NOON) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _postgres_check(url: str) -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=5)
    except Exception as exc:  # any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def _postgres_exec(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class PostgresSchemas:
    """Hands out a fresh schema per test (so each test's books are its own); drops them all."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def new(self) -> str:
        name = f"talos_billing_test_{secrets.token_hex(5)}"
        self.created.append(name)
        return name


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[PostgresSchemas]:
    """PostgreSQL for this session; skipped without one (a failure under CI=true)."""
    problem = asyncio.run(_postgres_check(POSTGRES_URL))
    if problem is not None:
        message = f"PostgreSQL not reachable at {POSTGRES_URL} ({problem})"
        if IN_CI:
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    schemas = PostgresSchemas()
    yield schemas
    if schemas.created:
        drops = "; ".join(f'DROP SCHEMA IF EXISTS "{name}" CASCADE' for name in schemas.created)
        asyncio.run(_postgres_exec(POSTGRES_URL, drops))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for one test's store on the parametrised backend."""
    base = Settings(host="127.0.0.1", port=0, data_dir=tmp_path, sweep_seconds=3600.0, log_level="debug")
    if backend == "postgresql":
        schemas: PostgresSchemas = request.getfixturevalue("postgres_schemas")
        return replace(base, database_url=POSTGRES_URL, database_schema=schemas.new())
    return base


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_store(settings: Settings, clock: FakeClock) -> AsyncIterator[OpenStore]:
    """Opens stores on the test's database (several = several billing replicas); all closed after."""
    opened: list[Store] = []

    async def _open(**overrides: Any) -> Store:
        store = await Store.open(replace(settings, **overrides), clock=clock)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        with contextlib.suppress(Exception):
            await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


# Deadline of every call a test makes to billing over gRPC.
TIMEOUT = 10.0


@dataclass
class Client:
    """A billing server in this process (port 0) and a channel to it."""

    billing: Billing
    stub: billing_pb2_grpc.BillingServiceStub
    channel: grpc.aio.Channel


@pytest.fixture
async def client(settings: Settings, clock: FakeClock) -> AsyncIterator[Client]:
    billing = await start(settings, clock=clock, sweeper=False)
    channel = grpc.aio.insecure_channel(billing.address)
    try:
        yield Client(billing, billing_pb2_grpc.BillingServiceStub(channel), channel)
    finally:
        await channel.close()
        await billing.stop()


async def call_error(call: object) -> TalosError:
    """The TalosError a gRPC call ends with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return from_rpc_error(caught.value)
