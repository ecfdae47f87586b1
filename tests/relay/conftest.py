"""A real relay (Relay + its gRPC server on port 0) and test-peer nodes dialling it."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest

from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay import Relay, start_relay_server
from talos_gateway.relay.contract import RelayEvent, RenderSpec

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


@pytest.fixture
async def make_relay() -> AsyncIterator[MakeRelay]:
    made: list[Harness] = []

    async def factory(tokens: TokenTable | None = None, **overrides: Any) -> Harness:
        settings = dataclasses.replace(Settings(), **{**TEST_SETTINGS, **overrides})
        table = tokens or TokenTable()
        relay = Relay(settings, table.authenticate)
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
