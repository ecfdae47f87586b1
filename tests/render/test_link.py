"""The node's relay link against a real gRPC RelayService on a real socket."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from PIL import Image

from talos.relay.v1 import relay_pb2
from talos_render.config import Settings
from talos_render.engine import Engine
from talos_render.link import Backoff, RelayLink

from .relay_peer import TOKEN, RelayPeer

SMALL = "256x256"


def node_settings(relay: str, **changes: object) -> Settings:
    base = Settings(
        relay=relay,
        token=TOKEN,
        device="cpu",
        sizes=(SMALL, "1024x1024", "832x1216", "1216x832"),
        reconnect_min_seconds=0.05,
        reconnect_max_seconds=0.5,
        resolve_every_seconds=0.5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def job(job_id: str, **changes: object) -> relay_pb2.RenderJob:
    fields: dict[str, object] = {
        "job_id": job_id,
        "prompt": "a red bicycle",
        "negative_prompt": "",
        "width": 256,
        "height": 256,
        "steps": 3,
        "guidance": 5.0,
        "seed": 7,
        "output_format": "png",
        "preview_every": 1,
    }
    fields.update(changes)
    return relay_pb2.RenderJob(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def peer() -> AsyncIterator[RelayPeer]:
    relay = RelayPeer()
    await relay.start()
    yield relay
    await relay.stop()


async def start_node(settings: Settings, engine: Engine) -> tuple[RelayLink, asyncio.Task[None]]:
    link = RelayLink(settings, engine, model_name="talos-tiny-test", device="cpu", version="test")
    return link, asyncio.create_task(link.run())


async def stop_node(link: RelayLink, task: asyncio.Task[None]) -> None:
    await link.shutdown(grace=5)
    await asyncio.wait_for(task, 15)


async def test_node_says_hello_and_serves_a_job(peer: RelayPeer, engine: Engine) -> None:
    engine.seconds_per_step = 0.042
    link, task = await start_node(node_settings(peer.address, concurrency=1), engine)
    try:
        stream = await peer.next_stream()
        assert stream.authorization == f"Bearer {TOKEN}"
        assert stream.hello.model == "talos-tiny-test"
        assert list(stream.hello.sizes) == [SMALL, "1024x1024", "832x1216", "1216x832"]
        assert stream.hello.concurrency == 1 and stream.hello.device == "cpu"
        assert stream.hello.seconds_per_step == pytest.approx(0.042)
        await link.wait_connected(1)

        stream.send_job(job("job-1", width=1024, height=1024, steps=3, preview_every=1))
        events = await stream.job_events("job-1")
        kinds = [e.WhichOneof("msg") for e in events]
        assert kinds == ["accepted", "progress", "progress", "progress", "result"]
        progress = [e.progress for e in events[1:4]]
        assert [p.step for p in progress] == [1, 2, 3] and {p.total_steps for p in progress} == {3}
        assert [bool(p.preview_jpeg) for p in progress] == [True, True, False]
        assert Image.open(io.BytesIO(progress[0].preview_jpeg)).format == "JPEG"
        result = events[-1].result
        image = Image.open(io.BytesIO(result.image))
        assert image.format == "PNG" and image.size == (1024, 1024)
        assert (result.width, result.height, result.output_format) == (1024, 1024, "png")
        assert result.render_seconds > 0

        # Heartbeats keep coming (the peer asks for one a second).
        await asyncio.wait_for(stream.heartbeat_seen.wait(), 10)
    finally:
        await stop_node(link, task)


async def test_busy_unsupported_and_cancel(peer: RelayPeer, engine: Engine) -> None:
    link, task = await start_node(node_settings(peer.address, concurrency=1), engine)
    try:
        stream = await peer.next_stream()
        stream.send_job(job("long", steps=60, preview_every=0))
        stream.send_job(job("second"))
        stream.send_job(job("odd-size", width=300, height=300))
        stream.send_job(job("too-many-steps", steps=10_000))
        first = await stream.next()
        assert first.WhichOneof("msg") == "accepted" and first.accepted.job_id == "long"
        rejected: dict[str, str] = {}
        while len(rejected) < 3:
            message = await stream.next()
            if message.WhichOneof("msg") == "rejected":
                rejected[message.rejected.job_id] = message.rejected.reason
            else:
                assert message.WhichOneof("msg") == "progress"
        assert rejected == {"second": "busy", "odd-size": "unsupported", "too-many-steps": "unsupported"}

        # Cancel mid-run: the node stops within one step and says so.
        while True:
            message = await stream.next()
            if message.WhichOneof("msg") == "progress" and message.progress.step >= 2:
                break
        stream.cancel("long")
        last_step_seen = message.progress.step
        rest = await stream.job_events("long")
        assert rest[-1].WhichOneof("msg") == "failed"
        assert rest[-1].failed.reason == "cancelled"
        steps_after = [m.progress.step for m in rest if m.WhichOneof("msg") == "progress"]
        # Progress may be coalesced; at most the step in progress plus one more finishes.
        assert all(step <= last_step_seen + 2 for step in steps_after)
        assert link.active_jobs == 0

        # Free again: the next job is accepted and finishes.
        stream.send_job(job("after", steps=2))
        events = await stream.job_events("after")
        assert events[0].WhichOneof("msg") == "accepted" and events[-1].WhichOneof("msg") == "result"
    finally:
        await stop_node(link, task)


async def test_node_reconnects_after_its_relay_restarts(engine: Engine) -> None:
    relay = RelayPeer()
    port = await relay.start()
    link, task = await start_node(node_settings(f"127.0.0.1:{port}"), engine)
    try:
        first = await relay.next_stream()
        await link.wait_connected(1)
        await relay.stop()
        await asyncio.wait_for(first.ended.wait(), 10)

        relay = RelayPeer()
        assert await relay.start(port) == port  # the same address, as a restarted relay
        second = await relay.next_stream(within=30)
        assert second.hello.model == "talos-tiny-test"
        second.send_job(job("after-restart", steps=2))
        events = await second.job_events("after-restart")
        assert events[-1].WhichOneof("msg") == "result"
    finally:
        await stop_node(link, task)
        await relay.stop()


async def test_one_stream_per_relay_and_busy_across_them(engine: Engine) -> None:
    """Two relays (as two gateway replicas): a stream to each; a job on one makes the node
    refuse work from the other."""
    relays = [RelayPeer(), RelayPeer()]
    for relay in relays:
        await relay.start()
    addresses = ",".join(relay.address for relay in relays)
    link, task = await start_node(node_settings(addresses, concurrency=1), engine)
    try:
        streams = [await relay.next_stream() for relay in relays]
        await link.wait_connected(2)
        streams[0].send_job(job("on-first", steps=40, preview_every=0))
        assert (await streams[0].next()).WhichOneof("msg") == "accepted"
        streams[1].send_job(job("on-second"))
        refused = await streams[1].next()
        assert refused.WhichOneof("msg") == "rejected" and refused.rejected.reason == "busy"
        streams[0].cancel("on-first")
        events = await streams[0].job_events("on-first")
        assert events[-1].failed.reason == "cancelled"
    finally:
        await stop_node(link, task)
        for relay in relays:
            await relay.stop()


async def test_a_refused_token_is_retried_with_backoff(engine: Engine) -> None:
    relay = RelayPeer(token="another-token")
    await relay.start()
    link, task = await start_node(node_settings(relay.address), engine)
    try:
        async with asyncio.timeout(20):
            while relay.refused < 3:
                relay.refusal.clear()
                await relay.refusal.wait()
        assert link.connected() == []
    finally:
        await stop_node(link, task)
        await relay.stop()


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(6)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(cap / 2 <= delay <= cap for delay, cap in zip(delays, caps, strict=True))
    backoff.reset()
    assert backoff.next() <= 0.5


async def test_relay_names_resolve_to_one_stream_per_address(engine: Engine) -> None:
    link = RelayLink(
        node_settings("localhost:5005, 127.0.0.1:5006,[::1]:5007"),
        engine,
        model_name="m",
        device="cpu",
        version="test",
    )
    targets = await link.resolve()
    # localhost may give ::1 and 127.0.0.1: one relay, not two replicas.
    assert len([t for t in targets if t.endswith(":5005")]) == 1
    assert "127.0.0.1:5006" in targets and "[::1]:5007" in targets
