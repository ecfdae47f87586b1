"""The relay with real render nodes (``python -m talos_render``, built-in test model, CPU).

One scenario, because starting a real node costs seconds: two relays (two gateway replicas)
and two render nodes each dialling both; jobs from both replicas; a node SIGKILLed mid-job
(the job finishes on the other); a lying node next to a real one (retried on the real one,
then quarantined); and no node left (the job fails).
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from talos_common.errors import TalosError
from talos_dev.procs import ServiceProcess, python_module
from talos_gateway.relay.contract import Finished, Progress, Started

from .conftest import Harness, MakeRelay, TokenTable, collect, spec, wait_until

pytestmark = pytest.mark.slow


def render_node(name: str, token: str, relays: str, data_dir: Path, logs: Path) -> ServiceProcess:
    env = {
        "TALOS_RENDER_RELAY": relays,
        "TALOS_RENDER_TOKEN": token,
        "TALOS_RENDER_MODEL": "builtin",
        "TALOS_RENDER_DATA_DIR": str(data_dir),
        "TALOS_RENDER_HEALTH_HOST": "127.0.0.1",
        "TALOS_RENDER_HEALTH_PORT": "0",
        "TALOS_RENDER_METRICS_PORT": "0",
        "TALOS_RENDER_CONCURRENCY": "1",
        "TALOS_RENDER_RECONNECT_MAX_SECONDS": "1",
        "TALOS_RENDER_WARMUP_STEPS": "1",
    }
    return ServiceProcess(name, python_module("talos_render"), env, logs / f"{name}.log")


async def run_job(h: Harness, job_id: str, steps: int = 1) -> Finished:
    events = await collect(h.relay.run(job_id, "acct-" + job_id[-1], spec(steps=steps)))
    final = events[-1]
    assert isinstance(final, Finished)
    return final


async def test_real_nodes_two_replicas_kill_lie_and_run_out(make_relay: MakeRelay, tmp_path: Path) -> None:
    tokens = TokenTable()
    timeouts = {
        "job_timeout_base_seconds": 120.0,
        "accept_timeout_seconds": 30.0,
        "no_node_grace_seconds": 1.0,
    }
    a = await make_relay(tokens, quarantine_after_failures=2, **timeouts)
    b = await make_relay(tokens, **timeouts)
    relays = f"{a.address},{b.address}"
    nodes = {
        name: render_node(name, tokens.issue(name), relays, tmp_path / "models", tmp_path)
        for name in ("render-1", "render-2")
    }
    clock = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[name] = round(now - clock, 1)
        clock = now

    try:
        # The first node builds the test model into the shared cache; the second loads it.
        await asyncio.to_thread(nodes["render-1"].start, 300)
        await asyncio.to_thread(nodes["render-2"].start, 300)
        await a.wait_status("nodes_connected", 2, within=60)
        await b.wait_status("nodes_connected", 2, within=60)
        phase("start")

        # 1. Jobs from both replicas complete on real nodes, each exactly once.
        jobs = [(a, f"a-{i}") for i in range(3)] + [(b, f"b-{i}") for i in range(3)]
        finished = await asyncio.gather(*(run_job(h, job_id) for h, job_id in jobs))
        for final in finished:
            assert final.node_id in nodes and (final.width, final.height) == (1024, 1024)
            with Image.open(io.BytesIO(final.image)) as image:
                assert image.format == "PNG" and image.size == (1024, 1024)
        started = a.metric("talos_relay_dispatch_seconds_count") + b.metric(
            "talos_relay_dispatch_seconds_count"
        )
        busy = a.metric("talos_relay_requeues_total", reason="busy")
        busy += b.metric("talos_relay_requeues_total", reason="busy")
        assert started == 6 + busy  # every dispatch was either refused as busy or delivered once
        phase("replicas")

        # 2. A node SIGKILLed mid-job: the job finishes on the other node.
        events = a.relay.run("kill-1", "acct", spec(steps=3))
        first = await anext(events)
        assert isinstance(first, Started)
        assert isinstance(await anext(events), Progress)
        victim = first.node_id
        await asyncio.to_thread(nodes[victim].kill)
        rest = [e async for e in events]
        survivor = "render-2" if victim == "render-1" else "render-1"
        assert [e for e in rest if isinstance(e, Finished)] == [rest[-1]]
        assert isinstance(rest[-1], Finished) and rest[-1].node_id == survivor
        await a.wait_status("nodes_connected", 1)
        await b.wait_status("nodes_connected", 1)
        phase("kill")

        # 3. A lying node (a test peer: a real node does not lie) next to the real one:
        #    retried on the real one, then quarantined.
        liar = await a.node("liar", behaviour="garbage", seconds_per_step=0.0005)
        for i in range(2):
            assert (await run_job(a, f"lie-{i}")).node_id == survivor
        assert liar.received == ["lie-0", "lie-1"]
        assert a.relay.status()["nodes_quarantined"] == 1
        phase("liar")

        # 4. No node left (the liar is quarantined, the last real node dies): the job fails.
        events = a.relay.run("last-1", "acct", spec(steps=30))
        assert await anext(events) == Started(survivor)
        await asyncio.to_thread(nodes[survivor].kill)
        with pytest.raises(TalosError) as failed:
            await collect(events)
        assert failed.value.code == "no_capacity"
        await wait_until(lambda: a.relay.status()["jobs_running"] == 0, what="nothing running")
        phase("none left")
        print("phases (s):", phases)
    finally:
        for proc in nodes.values():
            await asyncio.to_thread(proc.stop, 10)
