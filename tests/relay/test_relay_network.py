"""Several relays (gateway replicas) in one network: a Redis queue, nodes on one replica each.

The relays run in this process (each with its own node server, peer server and replica id) and
share the Redis at 127.0.0.1:6379 under a network name of the test's own. The same, as real
processes behind a load balancer, is in ``tests/network``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from talos.relay.v1 import relay_pb2
from talos_common.errors import TalosError
from talos_gateway.relay.contract import Finished, Progress, Queued, RelayEvent, Started

from .conftest import Harness, MakeRelay, TokenTable, collect, drop_network, spec, wait_until
from .peer import PeerJob, PeerNode, tiny_image

pytestmark = pytest.mark.parametrize("relay_backend", ["redis"])

FAST = {"claim_every_seconds": 0.2, "replica_heartbeat_seconds": 0.2}


async def replicas(
    make_relay: MakeRelay, count: int, tokens: TokenTable, **settings: object
) -> list[Harness]:
    return [await make_relay(tokens, **{**FAST, **settings}) for _ in range(count)]


async def sees_nodes(h: Harness, count: int) -> None:
    await wait_until(
        lambda: h.relay.status()["nodes_connected"] == count, 10, f"{count} nodes in the network"
    )


async def test_a_replica_without_nodes_serves_through_another(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    bare, host = await replicas(make_relay, 2, tokens, relay_preview_every=2)
    with pytest.raises(TalosError) as refused:
        bare.relay.admit("acct")  # nobody anywhere yet
    assert refused.value.code == "no_capacity"
    node = await host.node("far", step_delay=0.01)
    await sees_nodes(bare, 1)
    status = bare.relay.status()
    assert status["local_nodes_connected"] == 0 and status["nodes_idle"] == 1
    bare.relay.admit("acct")
    events = await collect(bare.relay.run("job-far", "acct", spec(steps=4, width=832, height=1216)))
    assert events[0] == Started("far")
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3, 4]
    assert [bool(e.preview_jpeg) for e in events if isinstance(e, Progress)] == [False, True, False, True]
    final = events[-1]
    assert isinstance(final, Finished) and final.node_id == "far"
    assert final.image == tiny_image(832, 1216, "png")
    assert node.received == ["job-far"]
    # The image was checked on the host, which owns the node: its record learnt from the job.
    assert host.relay.book.records["far"].jobs_done == 1
    assert bare.metric("talos_relay_jobs_total", outcome="finished") == 1
    assert host.metric("talos_relay_jobs_total", outcome="finished") == 0


async def test_jobs_from_every_replica_reach_every_node(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    hs = await replicas(make_relay, 3, tokens)
    nodes = [await h.node(f"node-{i}", step_delay=0.005) for i, h in enumerate(hs)]
    for h in hs:
        await sees_nodes(h, 3)
    jobs = [(hs[i % 3], f"j{i}", f"acct-{i % 5}") for i in range(45)]
    results = await asyncio.gather(*(collect(h.relay.run(j, a, spec(steps=2))) for h, j, a in jobs))
    assert all(isinstance(r[-1], Finished) for r in results)
    done = [j for node in nodes for j in node.completed]
    assert sorted(done) == sorted(j for _, j, _ in jobs)  # each exactly once
    # Jobs crossed replicas: every node ran jobs submitted to every replica.
    for node in nodes:
        origins = {int(j[1:]) % 3 for j in node.completed}
        assert origins == {0, 1, 2}, (node.name, node.completed)
        assert node.rejected_busy == 0 and node.max_active <= node.concurrency


async def test_positions_and_etas_are_those_of_the_whole_network(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    a, b, c = await replicas(make_relay, 3, tokens)
    await a.node("only", behaviour="hang", seconds_per_step=0.5)
    for h in (b, c):
        await sees_nodes(h, 1)
    running = a.relay.run("j0", "acct-0", spec(steps=4))
    assert isinstance(await anext(running), Started)
    # Four accounts, one job each, alternately on b and c: the network serves them in that order.
    queued: list[AsyncIterator[RelayEvent]] = []
    seen: list[list[Queued]] = []
    for i, h in enumerate((b, c, b, c)):
        events = h.relay.run(f"q{i}", f"acct-{i + 1}", spec(steps=4))
        first = await anext(events)
        assert isinstance(first, Queued)
        queued.append(events)
        seen.append([first])

    async def follow(i: int) -> None:
        async for event in queued[i]:
            assert isinstance(event, Queued)
            seen[i].append(event)

    followers = [asyncio.create_task(follow(i)) for i in range(4)]
    # Each job reports its place in the whole network's queue, whichever replica holds it.
    await wait_until(lambda: [u[-1].position for u in seen] == [1, 2, 3, 4], 5, "network-wide positions")
    for updates in seen:
        positions = [q.position for q in updates]
        assert positions == sorted(positions, reverse=True), seen  # never further back
    etas = [updates[-1].eta_seconds for updates in seen]
    assert etas == sorted(etas) and etas[0] >= 1.5  # 4 steps × 0.5 s still to go for j0
    assert etas[3] - etas[0] == pytest.approx(3 * 2.0, abs=0.5)
    await wait_until(lambda: a.relay.status()["queue_length"] == 4, 5, "the queue's length seen from a")
    for task in followers:
        task.cancel()  # the clients go away: their jobs leave the queue
    await asyncio.gather(*followers, return_exceptions=True)
    await running.aclose()
    await wait_until(lambda: all(h.relay.status()["queue_length"] == 0 for h in (a, b, c)), 5, "queue empty")


async def test_one_account_flooding_one_replica_does_not_hold_up_another(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    a, b, c = await replicas(make_relay, 3, tokens, queue_bound_per_account=100)
    await a.node("n1", step_delay=0.03)
    await b.node("n2", step_delay=0.03)
    for h in (a, b, c):
        await sees_nodes(h, 2)
    starts: list[str] = []

    async def run(h: Harness, job_id: str, account: str) -> RelayEvent:
        last: RelayEvent | None = None
        async for event in h.relay.run(job_id, account, spec(steps=3)):
            if isinstance(event, Started):
                starts.append(job_id)
            last = event
        assert last is not None
        return last

    flood = [asyncio.create_task(run(b, f"flood-{i}", "greedy")) for i in range(30)]
    await wait_until(lambda: len(starts) >= 4, 10, "the flood under way")
    submitted_at: list[int] = []

    async def single() -> RelayEvent:
        submitted_at.append(len(starts))  # the job is submitted right after, with no await between
        return await run(c, "single", "modest")

    results = await asyncio.gather(single(), *flood)
    assert all(isinstance(r, Finished) for r in results)
    # At most one of the flood's jobs (its account already had its turn coming) started before it.
    assert starts.index("single") - submitted_at[0] <= 1, starts


async def test_cancelling_on_the_origin_cancels_on_the_far_node(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    origin, host = await replicas(make_relay, 2, tokens)
    node = await host.node("far", step_delay=0.1)
    await sees_nodes(origin, 1)
    events = origin.relay.run("job-c", "acct", spec(steps=50))
    assert await anext(events) == Started("far")
    assert isinstance(await anext(events), Progress)
    await events.aclose()
    await wait_until(lambda: node.cancels == ["job-c"], 5, "CancelJob at the far node")
    await wait_until(lambda: host.relay.status()["local_nodes_idle"] == 1, 10, "the far node free again")
    done = await collect(origin.relay.run("job-next", "acct", spec(steps=2)))
    assert isinstance(done[-1], Finished) and done[-1].node_id == "far"


async def test_an_origin_that_goes_away_frees_the_far_node(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    origin, host = await replicas(make_relay, 2, tokens)
    node = await host.node("far", step_delay=0.1)
    await sees_nodes(origin, 1)
    events = origin.relay.run("job-o", "acct", spec(steps=50))
    assert await anext(events) == Started("far")
    # The origin's peer server dies first (as with the process), then the rest of it.
    await origin.relay.network._server.stop(None)
    await origin.relay.close()
    await wait_until(lambda: node.cancels == ["job-o"], 10, "CancelJob at the far node")
    await wait_until(lambda: node.active == 0, 10, "the far node stopped")
    with pytest.raises(TalosError):
        await collect(events)


async def test_a_bad_image_is_caught_on_the_host_and_the_job_moves(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    origin, host, other = await replicas(make_relay, 3, tokens, quarantine_after_failures=1)
    liar = await host.node("liar", behaviour="garbage", seconds_per_step=0.001)
    await other.node("honest", seconds_per_step=0.5)
    await sees_nodes(origin, 2)
    events = await collect(origin.relay.run("job-l", "acct", spec()))
    final = events[-1]
    assert isinstance(final, Finished) and final.node_id == "honest"
    assert final.image == tiny_image(1024, 1024, "png")
    assert liar.received == ["job-l"]
    assert host.metric("talos_relay_node_faults_total", reason="invalid_result") == 1
    assert host.relay.status()["local_nodes_connected"] == 1 and host.relay.book.quarantined_count() == 1
    assert origin.metric("talos_relay_requeues_total", reason="invalid_result") == 1
    # The quarantine is the network's: dialling another replica does not wash it clean.
    await liar.stop()
    back = PeerNode(other.address, liar.token, behaviour="garbage", seconds_per_step=0.001)
    other.nodes.append(back)
    await back.start()
    await wait_until(lambda: other.relay.status()["local_nodes_connected"] == 2, 5, "the liar back")
    assert other.relay.book.quarantined_count() == 1
    again = await collect(origin.relay.run("job-l2", "acct", spec()))
    assert isinstance(again[-1], Finished) and again[-1].node_id == "honest"
    assert back.received == []


async def test_a_replica_that_starts_late_serves_at_once(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    (first,) = await replicas(make_relay, 1, tokens)
    await first.node("n1", step_delay=0.01)
    late = await make_relay(tokens, **FAST)
    # Its start-up read the network: it admits and serves from its very first request.
    assert late.relay.status()["nodes_connected"] == 1
    late.relay.admit("acct")
    events = await collect(late.relay.run("job-late", "acct", spec()))
    assert isinstance(events[-1], Finished) and events[-1].node_id == "n1"


async def test_revoking_a_token_ends_its_streams_on_every_replica(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    revoked: set[str] = set()

    async def active_nodes(node_ids: list[str]) -> list[str]:
        return [n for n in node_ids if n not in revoked]

    hs = [
        await make_relay(tokens, active_nodes=active_nodes, node_revocation_check_seconds=0.5, **FAST)
        for _ in range(3)
    ]
    token = tokens.issue("doomed")
    doomed = PeerNode([h.address for h in hs], token, name="doomed")
    hs[0].nodes.append(doomed)
    await doomed.start()
    keeper = await hs[1].node("keeper")
    for h in hs:
        await sees_nodes(h, 2)
    revoked.add("doomed")
    del tokens.tokens[token]  # billing refuses it from now on
    started = time.monotonic()
    for link in doomed.links:
        await asyncio.wait_for(link.ended.wait(), timeout=10)
    assert time.monotonic() - started < 10
    for link in doomed.links:
        assert link.error is not None and link.error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in (link.error.details() or "")
    assert not keeper.links[0].ended.is_set()
    again = PeerNode(hs[2].address, token)
    hs[2].nodes.append(again)
    await again.start()
    assert again.links[0].error is not None
    assert again.links[0].error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_jobs_waiting_when_redis_loses_its_data_still_run(
    make_relay: MakeRelay, relay_network: str
) -> None:
    tokens = TokenTable()
    origin, host = await replicas(make_relay, 2, tokens)

    async def hang_on_j0(node: PeerNode, pjob: PeerJob) -> None:
        if pjob.job.job_id == "j0":
            pjob.link.send(relay_pb2.NodeMessage(accepted=relay_pb2.JobAccepted(job_id="j0")))
            await asyncio.Event().wait()
        await node._builtin(pjob)

    await host.node("only", behaviour=hang_on_j0)
    await sees_nodes(origin, 1)
    running = host.relay.run("j0", "acct-0", spec())
    assert isinstance(await anext(running), Started)
    waiting = origin.relay.run("j1", "acct-1", spec())
    assert isinstance(await anext(waiting), Queued)
    await drop_network(relay_network)  # a Redis restart without persistence: tickets, registrations
    await running.aclose()  # the node frees
    rest = await collect(waiting)
    assert isinstance(rest[-1], Finished) and rest[-1].node_id == "only"


async def test_no_prompt_or_image_ever_reaches_redis(make_relay: MakeRelay) -> None:
    """Everything the replicas send Redis while a job crosses between them, read back with MONITOR."""
    from redis.asyncio import Redis

    from .conftest import REDIS_URL

    tokens = TokenTable()
    bare, host = await replicas(make_relay, 2, tokens)
    await host.node("far", step_delay=0.01)
    await sees_nodes(bare, 1)
    canary = "canary-prompt-7f3d2c1b9e"
    watcher = Redis.from_url(REDIS_URL)
    seen: list[str] = []
    started = asyncio.Event()

    async def watch() -> None:
        async with watcher.monitor() as monitor:
            started.set()
            async for command in monitor.listen():
                seen.append(str(command.get("command", "")))

    watching = asyncio.create_task(watch())
    await started.wait()
    job_spec = spec(prompt=canary, negative_prompt=canary + "-negative", steps=3)
    events = await collect(bare.relay.run("job-canary", "acct", job_spec))
    final = events[-1]
    assert isinstance(final, Finished)
    await asyncio.sleep(0.5)  # the replicas' heartbeats and claims after the job, too
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await watcher.aclose()
    traffic = "\n".join(seen)
    assert "job-canary" in traffic, "MONITOR saw none of the job's own traffic"
    assert canary not in traffic
    assert "IHDR" not in traffic  # every PNG carries this chunk name near its start
