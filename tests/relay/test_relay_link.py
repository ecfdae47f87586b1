"""The node link: tokens, Hello first, Welcome, heartbeats, silence, reconnects."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from talos_common.errors import TalosError
from talos_common.server import KEEPALIVE_CLIENT_OPTIONS, KEEPALIVE_SERVER_OPTIONS
from talos_gateway.config import Settings

from .conftest import MakeRelay, collect, spec
from .peer import PeerNode


async def test_welcome_names_the_node_and_the_relay_counts_it(make_relay: MakeRelay) -> None:
    h = await make_relay(heartbeat_seconds=2.0)
    node = await h.node("node-a")
    assert node.links[0].node_id == "node-a"
    assert node.links[0].heartbeat_seconds == 2
    await h.wait_status("nodes_connected", 1)
    status = h.relay.status()
    assert status["nodes_idle"] == 1 and status["nodes_quarantined"] == 0 and status["queue_length"] == 0
    assert h.metric("talos_relay_nodes_connected") == 1.0
    assert "talos_relay_nodes_idle 1.0" in h.metrics_text()
    await node.stop()
    await h.wait_status("nodes_connected", 0)


async def test_wrong_or_missing_token_is_refused(make_relay: MakeRelay) -> None:
    h = await make_relay()
    wrong = PeerNode(h.address, "tok_not-issued-by-anyone")
    missing = PeerNode(h.address, "")
    h.nodes += [wrong, missing]
    # A job waits in the queue while they knock; it is never offered to them.
    waiting = asyncio.ensure_future(collect(h.relay.run("job-waiting", "acct", spec())))
    await h.wait_status("queue_length", 1)
    await wrong.start()
    await missing.start()
    for peer in (wrong, missing):
        error = peer.links[0].error
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert not peer.links[0].welcomed.is_set()
    assert h.tokens.calls == 1  # a missing token never reaches billing
    assert h.relay.status()["nodes_connected"] == 0
    # Even when a job waits, a refused node never sees it: the job fails for want of a node.
    with pytest.raises(TalosError) as failed:
        await waiting
    assert failed.value.code == "no_capacity"
    assert wrong.received == [] and missing.received == []


async def test_the_first_message_must_be_hello(make_relay: MakeRelay) -> None:
    h = await make_relay()
    confused = await h.node("confused", hello=False)
    error = confused.links[0].error
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert h.relay.status()["nodes_connected"] == 0


async def test_a_hello_without_a_usable_size_is_refused(make_relay: MakeRelay) -> None:
    h = await make_relay()
    odd = await h.node("odd", sizes=("huge", "0x0", "99999x2"))
    error = odd.links[0].error
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_silent_node_is_dropped_and_a_beating_one_kept(make_relay: MakeRelay) -> None:
    h = await make_relay(node_silence_seconds=1.0)
    silent = await h.node("silent", heartbeat=False)
    beating = await h.node("beating", heartbeat_seconds=0.2)
    await h.wait_status("nodes_connected", 2)
    await asyncio.wait_for(silent.links[0].ended.wait(), timeout=5)
    error = silent.links[0].error
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert h.relay.status()["nodes_connected"] == 1
    await asyncio.sleep(0.5)  # well past the silence limit for the beating node too
    assert not beating.links[0].ended.is_set()
    # The one left still takes work.
    events = await collect(h.relay.run("job-after-silence", "acct", spec()))
    assert events[-1].node_id == "beating"  # type: ignore[union-attr]


def test_defaults_detect_a_silent_node_within_40_seconds() -> None:
    settings = Settings()
    sweep = min(1.0, settings.node_silence_seconds / 4)
    assert settings.node_silence_seconds + sweep <= 40
    assert settings.heartbeat_seconds * 3 <= settings.node_silence_seconds
    # The node's pings are never more frequent than the relay allows (no too_many_pings).
    server = dict(KEEPALIVE_SERVER_OPTIONS)
    client = dict(KEEPALIVE_CLIENT_OPTIONS)
    assert client["grpc.keepalive_time_ms"] >= server["grpc.http2.min_recv_ping_interval_without_data_ms"]


async def test_a_node_reconnecting_replaces_its_old_stream(make_relay: MakeRelay) -> None:
    h = await make_relay()
    token = h.tokens.issue("node-r")
    first = PeerNode(h.address, token)
    second = PeerNode(h.address, token)
    h.nodes += [first, second]
    await first.start()
    await h.wait_status("nodes_connected", 1)
    await second.start()
    await asyncio.wait_for(first.links[0].ended.wait(), timeout=5)
    assert second.links[0].welcomed.is_set() and not second.links[0].ended.is_set()
    assert h.relay.status()["nodes_connected"] == 1
    events = await collect(h.relay.run("job-r", "acct", spec()))
    assert events[-1].node_id == "node-r"  # type: ignore[union-attr]
    assert second.received == ["job-r"] and first.received == []
