"""Failures: nodes that die, hang, fail or lie; retries, quarantine, cancel, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from talos.relay.v1 import relay_pb2
from talos_common.errors import TalosError
from talos_dev.procs import ServiceProcess, python_module
from talos_gateway.relay.contract import Finished, Progress, Started

from .conftest import Harness, MakeRelay, collect, spec, wait_until
from .peer import PeerNode, preview_jpeg, tiny_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def peer_processes(tmp_path: Path) -> AsyncIterator[list[ServiceProcess]]:
    procs: list[ServiceProcess] = []
    yield procs
    for proc in procs:
        await asyncio.to_thread(proc.kill)


async def spawn_peer(
    h: Harness, procs: list[ServiceProcess], tmp: Path, name: str, *args: str
) -> ServiceProcess:
    """A test-peer node in its own process, so it can be SIGKILLed like a crashed machine."""
    token = h.tokens.issue(name)
    argv = python_module("tests.relay.peer", "--relay", h.address, "--token", token, *args)
    proc = ServiceProcess(name, argv, {}, tmp / f"{name}.log", cwd=REPO)
    procs.append(proc)
    await asyncio.to_thread(proc.start, 60)
    return proc


async def test_a_node_killed_mid_job_hands_the_job_to_another(
    make_relay: MakeRelay, peer_processes: list[ServiceProcess], tmp_path: Path
) -> None:
    h = await make_relay()
    procs = {
        name: await spawn_peer(h, peer_processes, tmp_path, name, "--step-delay", "0.1")
        for name in ("node-1", "node-2")
    }
    await h.wait_status("nodes_connected", 2)
    events = h.relay.run("job-k", "acct", spec(steps=10))
    first = await anext(events)
    assert isinstance(first, Started)
    step = await anext(events)
    assert isinstance(step, Progress)
    await asyncio.to_thread(procs[first.node_id].kill)  # SIGKILL, mid-job
    rest = [e async for e in events]
    finished = [e for e in rest if isinstance(e, Finished)]
    assert len(finished) == 1 and rest[-1] is finished[0]
    survivor = "node-2" if first.node_id == "node-1" else "node-1"
    assert finished[0].node_id == survivor
    assert [e.node_id for e in rest if isinstance(e, Started)] == [survivor]
    assert h.metric("talos_relay_requeues_total", reason="disconnect") == 1
    assert h.metric("talos_relay_jobs_total", outcome="finished") == 1
    assert h.relay.status()["nodes_connected"] == 1


async def test_with_no_node_left_the_job_fails(
    make_relay: MakeRelay, peer_processes: list[ServiceProcess], tmp_path: Path
) -> None:
    h = await make_relay(no_node_grace_seconds=0.5)
    proc = await spawn_peer(h, peer_processes, tmp_path, "lonely", "--step-delay", "0.1")
    await h.wait_status("nodes_connected", 1)
    events = h.relay.run("job-n", "acct", spec(steps=20))
    assert isinstance(await anext(events), Started)
    await asyncio.to_thread(proc.kill)
    with pytest.raises(TalosError) as failed:
        await collect(events)
    assert failed.value.code == "no_capacity"
    status = h.relay.status()
    assert (status["nodes_connected"], status["queue_length"], status["jobs_running"]) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["garbage", "wrong_size", "wrong_format", "huge"])
async def test_a_node_returning_a_bad_image_is_retried_elsewhere_then_quarantined(
    make_relay: MakeRelay, mode: str
) -> None:
    h = await make_relay(quarantine_after_failures=2, max_image_bytes=200_000)
    # The liar claims to be fastest, so it is chosen first while it is trusted.
    liar = await h.node("liar", behaviour=mode, seconds_per_step=0.001, huge_bytes=300_000)
    honest = await h.node("honest", seconds_per_step=0.5)
    results = []
    for i in range(3):
        events = await collect(h.relay.run(f"job-{i}", "acct", spec()))
        results.append(events[-1])
    assert all(isinstance(r, Finished) and r.node_id == "honest" for r in results)
    assert all(r.image == tiny_image(1024, 1024, "png") for r in results)  # type: ignore[union-attr]
    # Two faults and it gets no more work; the third job went straight to the honest node.
    assert liar.received == ["job-0", "job-1"]
    assert honest.received == ["job-0", "job-1", "job-2"]
    assert h.relay.status()["nodes_quarantined"] == 1
    assert h.metric("talos_relay_node_faults_total", reason="invalid_result") == 2
    assert h.metric("talos_relay_quarantines_total") == 1


async def test_a_payload_over_the_message_cap_ends_that_node_and_the_job_moves(make_relay: MakeRelay) -> None:
    h = await make_relay(relay_max_message_bytes=1024 * 1024)
    flood = await h.node("flood", behaviour="huge", seconds_per_step=0.001, huge_bytes=2 * 1024 * 1024)
    await h.node("honest", seconds_per_step=0.5)
    events = await collect(h.relay.run("job-f", "acct", spec()))
    assert isinstance(events[-1], Finished) and events[-1].node_id == "honest"
    assert flood.received == ["job-f"]
    await asyncio.wait_for(flood.links[0].ended.wait(), timeout=5)
    assert h.relay.status()["nodes_connected"] == 1


async def test_after_max_attempts_the_job_fails(make_relay: MakeRelay) -> None:
    h = await make_relay(max_attempts=3, quarantine_after_failures=10)
    a = await h.node("fail-a", behaviour="fail")
    b = await h.node("fail-b", behaviour="fail")
    with pytest.raises(TalosError) as failed:
        await collect(h.relay.run("job-x", "acct", spec()))
    assert failed.value.code == "internal"
    # A different node is preferred for each retry; with only two, the third goes back to one.
    assert sorted(a.received + b.received) == ["job-x"] * 3
    assert a.received and b.received
    assert h.metric("talos_relay_requeues_total", reason="job_failed") == 2


async def test_a_node_that_hangs_times_out_and_gets_a_cancel(make_relay: MakeRelay) -> None:
    h = await make_relay(
        max_attempts=2, job_timeout_base_seconds=0.3, job_timeout_per_step_megapixel_seconds=0.0
    )
    a = await h.node("hang-a", behaviour="hang")
    b = await h.node("hang-b", behaviour="hang")
    with pytest.raises(TalosError) as failed:
        await collect(h.relay.run("job-t", "acct", spec()))
    assert failed.value.code == "timeout"
    assert a.received == ["job-t"] and b.received == ["job-t"]
    await wait_until(lambda: a.cancels == ["job-t"] and b.cancels == ["job-t"], what="cancels")


async def test_a_node_that_never_answers_a_job_times_out(make_relay: MakeRelay) -> None:
    h = await make_relay(max_attempts=1, accept_timeout_seconds=0.3)

    async def mute(node: PeerNode, pjob: object) -> None:
        await asyncio.Event().wait()

    await h.node("mute", behaviour=mute)
    with pytest.raises(TalosError) as failed:
        await collect(h.relay.run("job-m", "acct", spec()))
    assert failed.value.code == "timeout"
    assert h.metric("talos_relay_node_faults_total", reason="accept_timeout") == 1


async def test_closing_the_iterator_cancels_on_the_node_and_frees_it(make_relay: MakeRelay) -> None:
    h = await make_relay()
    node = await h.node("only", step_delay=0.1)
    events = h.relay.run("job-c", "acct", spec(steps=50))
    assert isinstance(await anext(events), Started)
    assert isinstance(await anext(events), Progress)
    await events.aclose()  # the client went away
    await wait_until(lambda: node.cancels == ["job-c"], what="CancelJob at the node")
    await wait_until(lambda: node.active == 0, what="the node to stop")
    await h.wait_status("nodes_idle", 1)
    assert h.metric("talos_relay_jobs_total", outcome="cancelled") == 1
    done = await collect(h.relay.run("job-next", "acct", spec(steps=2)))
    assert isinstance(done[-1], Finished) and done[-1].node_id == "only"


async def test_a_task_cancelled_while_queued_leaves_the_queue(make_relay: MakeRelay) -> None:
    h = await make_relay()
    await h.node("only", behaviour="hang")
    running = h.relay.run("j0", "acct", spec())
    await anext(running)

    async def consume() -> None:
        await collect(h.relay.run("j1", "acct", spec()))

    task = asyncio.create_task(consume())
    await h.wait_status("queue_length", 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.relay.status()["queue_length"] == 0
    await running.aclose()


async def test_a_node_cannot_see_or_touch_another_nodes_job(make_relay: MakeRelay) -> None:
    h = await make_relay(quarantine_after_failures=100)
    worker = await h.node("worker", step_delay=0.05)
    # The spy offers no size the job needs, so the relay never sends it work.
    spy = await h.node("spy", sizes=("640x640",))
    events = h.relay.run("job-s", "acct", spec(steps=6))
    assert await anext(events) == Started("worker")
    first = await anext(events)
    assert isinstance(first, Progress) and first.step == 1
    # The spy guesses the job id and tries to inject progress and a result of its own.
    forged = tiny_image(1024, 1024, "jpeg")
    link = spy.links[0]
    link.send(
        relay_pb2.NodeMessage(
            progress=relay_pb2.JobProgress(job_id="job-s", step=5, total_steps=6, preview_jpeg=preview_jpeg())
        )
    )
    link.send(
        relay_pb2.NodeMessage(
            result=relay_pb2.JobResult(
                job_id="job-s", image=forged, output_format="png", width=1024, height=1024
            )
        )
    )
    link.send(relay_pb2.NodeMessage(failed=relay_pb2.JobFailed(job_id="job-s", reason="error")))
    await wait_until(
        lambda: h.metric("talos_relay_node_faults_total", reason="foreign_job") == 3, what="faults"
    )
    rest = [e async for e in events]
    steps = [e.step for e in rest if isinstance(e, Progress)]
    assert steps == [2, 3, 4, 5, 6]
    final = rest[-1]
    assert isinstance(final, Finished) and final.node_id == "worker"
    assert final.image == tiny_image(1024, 1024, "png")
    assert spy.received == [] and worker.received == ["job-s"]


async def test_a_node_handing_a_job_back_is_not_blamed(make_relay: MakeRelay) -> None:
    h = await make_relay(max_attempts=1)
    quitter = await h.node("quitter", behaviour="cancelled", seconds_per_step=0.001)
    await h.node("steady", seconds_per_step=0.5)
    events = await collect(h.relay.run("job-h", "acct", spec()))
    assert isinstance(events[-1], Finished) and events[-1].node_id == "steady"
    assert quitter.received == ["job-h"]
    assert h.metric("talos_relay_requeues_total", reason="handed_back") == 1


async def test_drain_lets_short_jobs_finish_and_fails_the_rest(make_relay: MakeRelay) -> None:
    h = await make_relay()
    await h.node("quick", step_delay=0.05, seconds_per_step=0.001)
    stuck = await h.node("stuck", behaviour="hang", seconds_per_step=0.5)
    quick_job = h.relay.run("job-q", "acct", spec(steps=4))
    assert await anext(quick_job) == Started("quick")
    stuck_job = h.relay.run("job-h", "acct", spec(steps=4))
    assert await anext(stuck_job) == Started("stuck")
    quick_rest = asyncio.create_task(collect(quick_job))
    stuck_rest = asyncio.create_task(collect(stuck_job))
    drain = asyncio.create_task(h.relay.drain(grace=1.0))
    await wait_until(lambda: h.relay.status()["draining"], what="draining")
    with pytest.raises(TalosError) as refused:
        h.relay.admit("acct")
    assert refused.value.code == "unavailable"
    finished = await quick_rest
    assert isinstance(finished[-1], Finished)
    with pytest.raises(TalosError) as failed:
        await stuck_rest
    assert failed.value.code == "unavailable"
    await drain
    await wait_until(lambda: stuck.cancels == ["job-h"], what="cancel at the stuck node")
    await wait_until(
        lambda: all(link.ended.is_set() for n in h.nodes for link in n.links), what="streams ended"
    )


async def test_quarantine_survives_a_reconnect(make_relay: MakeRelay) -> None:
    h = await make_relay(quarantine_after_failures=1)
    token = h.tokens.issue("liar")
    liar = PeerNode(h.address, token, behaviour="garbage", seconds_per_step=0.001)
    h.nodes.append(liar)
    await liar.start()
    await h.node("honest", seconds_per_step=0.5)
    first = await collect(h.relay.run("job-1", "acct", spec()))
    assert isinstance(first[-1], Finished) and first[-1].node_id == "honest"
    assert h.relay.status()["nodes_quarantined"] == 1
    # Dropping the stream and dialling again does not wash the record clean.
    await liar.stop()
    await h.wait_status("nodes_connected", 1)
    back = PeerNode(h.address, token, behaviour="garbage", seconds_per_step=0.001)
    h.nodes.append(back)
    await back.start()
    await h.wait_status("nodes_connected", 2)
    assert h.relay.status()["nodes_quarantined"] == 1
    assert h.relay.status()["nodes_idle"] == 1  # only the honest one counts
    second = await collect(h.relay.run("job-2", "acct", spec()))
    assert isinstance(second[-1], Finished) and second[-1].node_id == "honest"
    assert back.received == []
