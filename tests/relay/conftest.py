"""A real relay (Relay + its gRPC server on port 0) and test-peer nodes dialling it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest

from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay import Relay, start_relay_server
from talos_gateway.relay.contract import RelayEvent, RenderSpec
from talos_gateway.relay.states import REFUSED

from .peer import PeerNode

# Fast timers for tests; every test may override any field.
TEST_SETTINGS: dict[str, Any] = {
    "host": "127.0.0.1",
    "relay_port": 0,
    "heartbeat_seconds": 1.0,
    "node_silence_seconds": 30.0,
    "queue_timeout_seconds": 30.0,
    "job_timeout_base_seconds": 30.0,
    "no_node_grace_seconds": 0.5,
    "quarantine_seconds": 60.0,
    "accept_timeout_seconds": 5.0,
}


def spec(**overrides: Any) -> RenderSpec:
    base: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "",
        "width": 1024,
        "height": 1024,
        "steps": 3,
        "guidance": 5.0,
        "seed": 7,
        "output_format": "png",
    }
    base.update(overrides)
    return RenderSpec(**base)


class TokenTable:
    """Node tokens for tests whose subject is the relay (billing has its own tests)."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.calls = 0

    def issue(self, node_id: str) -> str:
        token = "tok_" + secrets.token_urlsafe(12)
        self.tokens[token] = node_id
        return token

    async def authenticate(self, token: str) -> str:
        self.calls += 1
        node_id = self.tokens.get(token)
        if node_id is None:
            raise TalosError("invalid_api_key", "unknown node token")
        return node_id


@dataclass
class Harness:
    relay: Relay
    server: grpc.aio.Server
    port: int
    tokens: TokenTable
    nodes: list[PeerNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def node(self, name: str, *, start: bool = True, **kwargs: Any) -> PeerNode:
        token = self.tokens.issue(name)
        peer = PeerNode(self.address, token, name=name, **kwargs)
        self.nodes.append(peer)
        if start:
            await peer.start()
        return peer

    async def wait_status(self, key: str, value: int, within: float = 10.0) -> None:
        await wait_until(lambda: self.relay.status()[key] == value, within, f"{key} == {value}")

    def metric(self, name: str, **labels: str) -> float:
        value = self.relay.metrics_registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value

    def metrics_text(self) -> str:
        return generate_latest(self.relay.metrics_registry).decode()


async def wait_until(predicate: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def collect(events: AsyncIterator[RelayEvent]) -> list[RelayEvent]:
    return [event async for event in events]


MakeRelay = Callable[..., Awaitable[Harness]]

REDIS_URL = "redis://127.0.0.1:6379/0"
IN_CI = os.environ.get("CI", "").lower() == "true"


async def redis_reachable(url: str = REDIS_URL) -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def require_redis() -> None:
    """Network tests need the Redis at 127.0.0.1:6379: skipped without it, except under CI."""
    if not await redis_reachable():
        if IN_CI:
            pytest.fail(f"Redis is not reachable at {REDIS_URL} (CI must provide it)")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")


async def drop_network(name: str) -> None:
    """Deletes every key of a test network (tests share one Redis; each has its own network)."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"talos:{name}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def relay_backend() -> str:
    """The queue backend of relays made by ``make_relay``; modules may parametrize it."""
    return "memory"


@pytest.fixture
async def relay_network(relay_backend: str) -> AsyncIterator[str | None]:
    """A network name of this test's own, when the backend is Redis."""
    if relay_backend != "redis":
        yield None
        return
    await require_redis()
    name = "test-" + secrets.token_hex(6)
    yield name
    await drop_network(name)


@pytest.fixture(autouse=True)
def no_illegal_transitions() -> Iterator[None]:
    """Every state change of a job or an attempt is in its table, even inside callbacks."""
    before = REFUSED.count
    yield
    assert REFUSED.count == before, "the relay attempted an illegal state transition (see the log)"


@pytest.fixture
async def make_relay(relay_network: str | None) -> AsyncIterator[MakeRelay]:
    made: list[Harness] = []

    async def factory(
        tokens: TokenTable | None = None, active_nodes: Any = None, **overrides: Any
    ) -> Harness:
        network: dict[str, Any] = {}
        if relay_network is not None:
            network = {"redis_url": REDIS_URL, "relay_network": relay_network, "peer_port": 0}
        settings = dataclasses.replace(Settings(), **{**TEST_SETTINGS, **network, **overrides})
        table = tokens or TokenTable()
        relay = Relay(settings, table.authenticate, active_nodes)
        server, port = await start_relay_server(relay, settings)
        harness = Harness(relay, server, port, table)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        for node in harness.nodes:
            await node.stop()
        await harness.relay.close()
        await harness.server.stop(None)
