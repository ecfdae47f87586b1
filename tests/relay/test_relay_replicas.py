"""Two gateway replicas (two relays, two servers) sharing three nodes, each node on both."""

from __future__ import annotations

import asyncio

from talos_gateway.relay.contract import Finished

from .conftest import MakeRelay, TokenTable, collect, spec
from .peer import PeerNode


async def test_two_relays_share_three_nodes_without_overloading_any(make_relay: MakeRelay) -> None:
    tokens = TokenTable()
    first = await make_relay(tokens)
    second = await make_relay(tokens)
    nodes = [
        PeerNode(
            [first.address, second.address], tokens.issue(f"node-{i}"), step_delay=0.01, name=f"node-{i}"
        )
        for i in range(3)
    ]
    first.nodes += nodes  # stopped by the fixture
    for node in nodes:
        await node.start()
    await first.wait_status("nodes_connected", 3)
    await second.wait_status("nodes_connected", 3)

    jobs = [(first, f"r1-{i}", f"acct-{i % 4}") for i in range(15)]
    jobs += [(second, f"r2-{i}", f"acct-{i % 4}") for i in range(15)]
    results = await asyncio.gather(*(collect(h.relay.run(job_id, acct, spec())) for h, job_id, acct in jobs))

    finished = [events[-1] for events in results]
    assert all(isinstance(f, Finished) for f in finished)
    # Every job ran to completion exactly once, on a node that reports having done it.
    completed = [job_id for node in nodes for job_id in node.completed]
    assert sorted(completed) == sorted(job_id for _, job_id, _ in jobs)
    for (_, job_id, _), final in zip(jobs, finished, strict=True):
        owner = next(node for node in nodes if job_id in node.completed)
        assert final.node_id == owner.name  # type: ignore[union-attr]
    # No node ever ran more than its concurrency, though both replicas pushed at it.
    assert all(node.max_active <= node.concurrency for node in nodes)
    assert sum(node.rejected_busy for node in nodes) > 0
    busy = first.metric("talos_relay_requeues_total", reason="busy")
    busy += second.metric("talos_relay_requeues_total", reason="busy")
    assert busy == sum(node.rejected_busy for node in nodes)
    assert first.metric("talos_relay_node_faults_total", reason="busy") == 0
