"""Scheduling: events of a job, admission, the fair queue, positions and ETAs, node choice."""

from __future__ import annotations

import asyncio

import pytest

from talos.relay.v1 import relay_pb2
from talos_common.errors import TalosError
from talos_gateway.relay.contract import Finished, Progress, Queued, RelayEvent, Started

from .conftest import MakeRelay, collect, spec, wait_until
from .peer import Link, PeerNode, tiny_image

# Every behaviour of the queue holds with the queue in memory and with the queue in Redis.
pytestmark = pytest.mark.parametrize("relay_backend", ["memory", "redis"])


async def test_a_job_streams_started_progress_and_a_checked_image(make_relay: MakeRelay) -> None:
    h = await make_relay(relay_preview_every=2)
    node = await h.node("node-a", step_delay=0.01)
    events = await collect(
        h.relay.run("job-1", "acct", spec(steps=5, width=832, height=1216, output_format="webp"))
    )
    assert events[0] == Started("node-a")
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == [1, 2, 3, 4, 5]
    assert all(p.total_steps == 5 for p in progress)
    assert [bool(p.preview_jpeg) for p in progress] == [False, True, False, True, False]
    final = events[-1]
    assert isinstance(final, Finished)
    assert (final.width, final.height, final.output_format, final.node_id) == (832, 1216, "webp", "node-a")
    assert final.image == tiny_image(832, 1216, "webp")
    assert node.received == ["job-1"]
    assert h.relay.status()["jobs_running"] == 0
    assert h.metric("talos_relay_jobs_total", outcome="finished") == 1
    assert h.metric("talos_relay_dispatch_seconds_count") == 1


async def test_admission_refuses_without_a_node(make_relay: MakeRelay) -> None:
    h = await make_relay()
    with pytest.raises(TalosError) as refused:
        h.relay.admit("acct")
    assert refused.value.code == "no_capacity" and refused.value.retry_after


async def test_admission_refuses_beyond_the_queue_bound(make_relay: MakeRelay) -> None:
    h = await make_relay(queue_bound=2)
    await h.node("slow", behaviour="hang")
    running = h.relay.run("j0", "acct", spec())
    first = await anext(running)
    assert isinstance(first, Started)
    waiting = [h.relay.run(f"j{i}", "acct", spec()) for i in (1, 2)]
    for events in waiting:
        h.relay.admit("acct")
        assert isinstance(await anext(events), Queued)
    assert h.relay.status()["queue_length"] == 2
    with pytest.raises(TalosError) as refused:
        h.relay.admit("other")
    assert refused.value.code == "no_capacity" and refused.value.retry_after is not None
    with pytest.raises(TalosError) as also:
        await anext(h.relay.run("j3", "acct", spec()))
    assert also.value.code == "no_capacity"
    for events in [running, *waiting]:
        await events.aclose()
    assert h.relay.status()["queue_length"] == 0


async def test_one_account_per_queue_share(make_relay: MakeRelay) -> None:
    h = await make_relay(queue_bound_per_account=1)
    await h.node("slow", behaviour="hang")
    running = h.relay.run("j0", "greedy", spec())
    await anext(running)
    queued = h.relay.run("j1", "greedy", spec())
    await anext(queued)
    with pytest.raises(TalosError) as refused:
        h.relay.admit("greedy")
    assert refused.value.code == "no_capacity" and "your images" in refused.value.message
    h.relay.admit("modest")  # another account still gets in
    await queued.aclose()
    await running.aclose()


async def test_the_queue_is_fair_between_accounts_with_positions_and_etas(make_relay: MakeRelay) -> None:
    h = await make_relay()
    await h.node("only", step_delay=0.08)
    starts: list[str] = []
    seen: dict[str, list[Queued]] = {}

    async def one(job_id: str, account: str) -> RelayEvent:
        last: RelayEvent | None = None
        async for event in h.relay.run(job_id, account, spec(steps=2)):
            if isinstance(event, Queued):
                seen.setdefault(job_id, []).append(event)
            if isinstance(event, Started):
                starts.append(job_id)
            last = event
        assert last is not None
        return last

    burst = [f"a{i}" for i in range(6)]
    tasks = [asyncio.create_task(one(j, "burst")) for j in burst]
    await wait_until(lambda: h.relay.status()["queue_length"] == 5, what="the burst queued")
    later = [asyncio.create_task(one(j, "patient")) for j in ("b0", "b1")]
    results = await asyncio.gather(*tasks, *later)
    assert all(isinstance(r, Finished) for r in results)
    # Round-robin: the patient account's two jobs start within the next four, not after the burst.
    assert starts.index("b0") <= 3 and starts.index("b1") <= 5, starts
    assert [s for s in starts if s.startswith("a")] == burst  # each account keeps its own order
    # Positions move towards the head as jobs start; the last one seen before starting is 1.
    # (An account arriving later may step in front once: that is the fairness.)
    for job_id, updates in seen.items():
        assert updates[-1].position == 1, (job_id, updates)
        assert all(q.eta_seconds > 0 for q in updates)
    for job_id in ("b0", "b1"):
        positions = [q.position for q in seen[job_id]]
        assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)
    assert seen["a5"][0].position >= 5 and len(seen["a5"]) >= 4


async def test_etas_grow_with_the_position(make_relay: MakeRelay) -> None:
    h = await make_relay()
    await h.node("only", behaviour="hang", seconds_per_step=0.5)
    running = h.relay.run("j0", "acct", spec(steps=4))
    await anext(running)
    queued = [h.relay.run(f"q{i}", f"acct{i}", spec(steps=4)) for i in range(4)]
    firsts = [await anext(q) for q in queued]
    assert [f.position for f in firsts] == [1, 2, 3, 4]  # type: ignore[union-attr]
    etas = [f.eta_seconds for f in firsts]  # type: ignore[union-attr]
    assert etas == sorted(etas) and etas[0] >= 2.0 - 0.2  # 4 steps x 0.5 s still to go for j0
    assert etas[3] - etas[0] == pytest.approx(3 * 2.0, abs=0.5)
    for events in [running, *queued]:
        await events.aclose()


async def test_the_node_expected_to_finish_soonest_is_chosen_and_learnt(make_relay: MakeRelay) -> None:
    h = await make_relay()
    # "boaster" claims to be fast but is slow; "steady" claims a bit slower and is fast.
    await h.node("boaster", seconds_per_step=0.01, step_delay=0.1)
    await h.node("steady", seconds_per_step=0.03, step_delay=0.0)
    first = await collect(h.relay.run("j1", "acct", spec(steps=3)))
    assert first[-1].node_id == "boaster"  # type: ignore[union-attr]
    # Its measured speed (about 0.1 s per step) now ranks it behind "steady".
    second = await collect(h.relay.run("j2", "acct", spec(steps=3)))
    assert second[-1].node_id == "steady"  # type: ignore[union-attr]


async def test_a_busy_refusal_is_not_an_attempt(make_relay: MakeRelay) -> None:
    h = await make_relay(max_attempts=1)
    # concurrency 0 in its Hello (read as 1 by the relay) and it refuses everything as busy.
    always_busy = await h.node("always-busy", concurrency=0, seconds_per_step=0.001)
    await h.node("slower", seconds_per_step=0.5)
    events = await collect(h.relay.run("j1", "acct", spec()))
    assert events[-1].node_id == "slower"  # type: ignore[union-attr]
    assert always_busy.received == ["j1"] and always_busy.rejected_busy == 1
    assert h.metric("talos_relay_requeues_total", reason="busy") == 1
    assert h.metric("talos_relay_node_faults_total", reason="busy") == 0


async def test_a_job_waiting_too_long_fails_with_no_capacity(make_relay: MakeRelay) -> None:
    h = await make_relay(queue_timeout_seconds=0.4)
    await h.node("stuck", behaviour="hang")
    running = h.relay.run("j0", "acct", spec())
    await anext(running)
    with pytest.raises(TalosError) as failed:
        await collect(h.relay.run("j1", "acct", spec()))
    assert failed.value.code == "no_capacity"
    await running.aclose()


class CountingPeer(PeerNode):
    """A peer that counts, at every job it is sent, the jobs it already holds."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.overloads = 0
        self.seen: list[int] = []

    def _on_job(self, link: Link, job: relay_pb2.RenderJob) -> None:
        self.seen.append(self.active)
        if self.active >= self.concurrency:
            self.overloads += 1
        super()._on_job(link, job)


async def test_a_node_never_gets_more_jobs_than_its_hello_offered(make_relay: MakeRelay) -> None:
    h = await make_relay(queue_bound=1000, queue_bound_per_account=1000)
    nodes = []
    for slots in (1, 2, 4):
        node = CountingPeer(
            h.address,
            h.tokens.issue(f"slots-{slots}"),
            name=f"slots-{slots}",
            concurrency=slots,
            step_delay=0.01,
        )
        h.nodes.append(node)
        await node.start()
        nodes.append(node)
    await h.wait_status("nodes_connected", 3)
    flood = [collect(h.relay.run(f"f{i}", f"acct-{i % 6}", spec(steps=3))) for i in range(70)]
    results = await asyncio.gather(*flood)
    assert all(isinstance(events[-1], Finished) for events in results)
    for node in nodes:
        assert node.overloads == 0 and node.rejected_busy == 0, (node.name, node.seen)
        assert len(node.seen) == len(node.received) > 0
        assert max(node.seen) == node.concurrency - 1  # it was kept full, never fuller
    assert sum(len(node.completed) for node in nodes) == 70
