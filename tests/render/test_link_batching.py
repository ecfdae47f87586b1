"""Concurrent jobs through one node's relay link, batched by its engine (CPU, built-in model)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from talos.relay.v1 import relay_pb2
from talos_render.engine import Engine, RenderRequest
from talos_render.loading import LoadedModel

from .pictures import assert_same_picture, decoded
from .relay_peer import TERMINAL, NodeStream, RelayPeer
from .test_link import job, node_settings, start_node, stop_node

WINDOW_MS = 60_000.0  # the batch starts once every job is in (it ends early when full)


@pytest.fixture
async def peer() -> AsyncIterator[RelayPeer]:
    relay = RelayPeer()
    await relay.start()
    yield relay
    await relay.stop()


def jobs_for(count: int, steps: int) -> list[relay_pb2.RenderJob]:
    return [
        job(f"job-{i}", seed=500 + i, prompt=f"a red bicycle, take {i}", steps=steps, preview_every=2)
        for i in range(count)
    ]


async def pictures_alone(engine: Engine, jobs: list[relay_pb2.RenderJob]) -> dict[str, np.ndarray]:
    references = {}
    for item in jobs:
        request = RenderRequest(
            item.prompt, item.negative_prompt, item.width, item.height, item.steps, item.guidance, item.seed
        )
        pixels, _ = await asyncio.to_thread(engine.render_pixels, request, lambda *_: None, threading.Event())
        references[item.job_id] = pixels
    return references


def check_progress(events: list[relay_pb2.NodeMessage], steps: int) -> None:
    """accepted, then progress in step order (a slow stream may coalesce steps, never reorder
    them; the last is always sent), then one terminal message."""
    kinds = [e.WhichOneof("msg") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] in TERMINAL
    assert set(kinds[1:-1]) <= {"progress"}
    seen = [e.progress.step for e in events[1:-1]]
    assert seen == sorted(set(seen)) and seen[-1] == steps
    assert {e.progress.total_steps for e in events[1:-1]} == {steps}


async def collect(
    stream: NodeStream, job_ids: list[str], cancel: str | None = None, cancel_at: int = 0
) -> dict[str, list[relay_pb2.NodeMessage]]:
    """Every job's messages up to its terminal one; cancels ``cancel`` once it reports ``cancel_at``."""
    events: dict[str, list[relay_pb2.NodeMessage]] = {job_id: [] for job_id in job_ids}
    open_jobs = set(job_ids)
    while open_jobs:
        message = await stream.next(180)
        kind = message.WhichOneof("msg")
        job_id = getattr(message, kind).job_id
        if job_id not in events:
            continue
        events[job_id].append(message)
        if kind in TERMINAL or kind == "rejected":
            open_jobs.discard(job_id)
        elif job_id == cancel and kind == "progress" and message.progress.step == cancel_at:
            stream.cancel(job_id)
    return events


@pytest.mark.parametrize("count", [2, 4])
async def test_concurrent_jobs_through_one_node(
    peer: RelayPeer, engine: Engine, loaded: LoadedModel, count: int
) -> None:
    jobs = jobs_for(count, steps=5)
    references = await pictures_alone(engine, jobs)
    batched = Engine(loaded, preview_size=64, max_batch=count, batch_window_ms=WINDOW_MS)
    rows: list[int] = []
    hook = loaded.pipe.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: rows.append(int((args[0] if args else kwargs["sample"]).shape[0])),
        with_kwargs=True,
    )
    link, task = await start_node(node_settings(peer.address, concurrency=count), batched)
    try:
        stream = await peer.next_stream()
        assert stream.hello.concurrency == count
        for item in jobs:
            stream.send_job(item)
        stream.send_job(job("one-too-many"))
        events = await collect(stream, [j.job_id for j in jobs] + ["one-too-many"])
    finally:
        await stop_node(link, task)
        hook.remove()
        batched.close()
    assert [e.WhichOneof("msg") for e in events.pop("one-too-many")] == ["rejected"]
    assert rows == [2 * count] * 5  # one pass per step for all of them
    for item in jobs:
        check_progress(events[item.job_id], steps=5)
        result = events[item.job_id][-1].result
        assert (result.width, result.height) == (256, 256)
        assert_same_picture(decoded(result.image), references[item.job_id])


async def test_cancelling_one_of_four_through_the_link(
    peer: RelayPeer, engine: Engine, loaded: LoadedModel
) -> None:
    jobs = jobs_for(4, steps=12)
    references = await pictures_alone(engine, jobs)
    batched = Engine(loaded, preview_size=64, max_batch=4, batch_window_ms=WINDOW_MS)
    link, task = await start_node(node_settings(peer.address, concurrency=4), batched)
    try:
        stream = await peer.next_stream()
        for item in jobs:
            stream.send_job(item)
        events = await collect(stream, [j.job_id for j in jobs], cancel="job-1", cancel_at=3)
        assert link.active_jobs == 0
    finally:
        await stop_node(link, task)
        batched.close()
    cancelled = events.pop("job-1")
    assert cancelled[-1].WhichOneof("msg") == "failed" and cancelled[-1].failed.reason == "cancelled"
    assert max(e.progress.step for e in cancelled if e.WhichOneof("msg") == "progress") < 12
    for job_id, messages in events.items():
        check_progress(messages, steps=12)
        assert_same_picture(decoded(messages[-1].result.image), references[job_id])
