"""The open network: every job reaches every node, whichever replica each landed on.

One scenario, because starting the processes costs seconds: three gateway replicas behind one
balancer, four nodes each on one replica (three test peers and a real render node); jobs from
every replica complete; an account flooding one replica does not hold up another's job on
another replica; a replica started during the run serves at once; a replica SIGKILLed mid-run
loses no credit (its nodes come back through the balancer, every accepted job ends exactly
once, charged or refunded) and the books still balance.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from talos_billing.config import Settings as BillingSettings
from talos_billing.store import Store
from talos_gateway.job import hold_id
from tests.api.support import read_sse

from .conftest import HOLD_TTL_SECONDS, SWEEP_SECONDS, Cluster

pytestmark = pytest.mark.slow

BODY = {"prompt": "a lighthouse at dusk", "steps": 4, "size": "1024x1024"}
GRANT = 100_000
PRICE = 18
HELD, CAPTURED = 1, 2


@dataclass
class Followed:
    job_id: str
    replica: str
    account: str
    events: list[tuple[float, str]] = field(default_factory=list)
    first_position: int | None = None
    outcome: str = "pending"  # completed | failed | lost (the stream broke)

    def at(self, name: str) -> float | None:
        return next((t for t, n in self.events if n == name), None)


class Client:
    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session
        self.followed: list[Followed] = []

    async def submit(self, replica: str, account: Any) -> Followed:
        url = self.cluster.http(replica) + "/v1/jobs"
        headers = {"Authorization": f"Bearer {account.api_key}"}
        async with self.session.post(url, json=BODY, headers=headers) as reply:
            assert reply.status == 202, await reply.text()
            job_id = (await reply.json())["job_id"]
        job = Followed(job_id, replica, account.account_id)
        self.followed.append(job)
        return job

    async def follow(self, job: Followed, api_key: str) -> Followed:
        url = f"{self.cluster.http(job.replica)}/v1/jobs/{job.job_id}/events"
        try:
            async with self.session.get(url, headers={"Authorization": f"Bearer {api_key}"}) as reply:
                async for name, data in read_sse(reply):
                    job.events.append((time.monotonic(), name))
                    if name == "queued" and job.first_position is None:
                        job.first_position = int(data["position"])
                    if name in ("completed", "failed"):
                        job.outcome = name
                        return job
        except (TimeoutError, aiohttp.ClientError):
            pass
        job.outcome = "lost"
        return job

    async def run(self, replica: str, account: Any) -> Followed:
        return await self.follow(await self.submit(replica, account), account.api_key)


async def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_replicas_behind_a_balancer_share_every_node(cluster: Cluster) -> None:
    for name in ("gw-a", "gw-b", "gw-c"):
        await asyncio.to_thread(cluster.start_replica, name)
    # Through the balancer, in turn: peer-1 → a, peer-2 → b, peer-3 → c, the render node → a.
    for i in (1, 2, 3):
        await asyncio.to_thread(cluster.add_peer, f"peer-{i}", 0.05)
    await asyncio.to_thread(cluster.add_render_node, "render-1")
    replicas = ["gw-a", "gw-b", "gw-c"]
    for name in replicas:
        await wait_for(lambda n=name: cluster.readiness(n).get("nodes_connected") == 4, 30, f"{name} sees 4")
    local = {name: await asyncio.to_thread(cluster.local_nodes, name) for name in replicas}
    assert sum(local.values()) == 4 and all(count >= 1 for count in local.values()), local

    accounts = [await asyncio.to_thread(cluster.mesh.create_account, GRANT) for _ in range(4)]
    keys = {a.account_id: a.api_key for a in accounts}
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = Client(cluster, session)

        # 1. Jobs submitted round-robin to every replica all complete.
        first = await asyncio.gather(*(client.run(replicas[i % 3], accounts[i % 2]) for i in range(12)))
        assert [job.outcome for job in first] == ["completed"] * 12

        # 2. One account floods one replica; another account's one job on another replica waits
        #    behind at most one of the flood's jobs (the flood's account already had its turn).
        greedy, modest = accounts[2], accounts[3]
        flood_jobs = [await client.submit("gw-a", greedy) for _ in range(16)]
        flood = [asyncio.create_task(client.follow(job, greedy.api_key)) for job in flood_jobs]
        await wait_for(lambda: sum(1 for j in flood_jobs if j.at("started")) >= 4, 30, "the flood under way")
        single = await client.run("gw-c", modest)
        await asyncio.gather(*flood)
        assert single.outcome == "completed"
        assert all(job.outcome == "completed" for job in flood_jobs)
        assert single.first_position is None or single.first_position <= 2, single
        queued_at = single.events[0][0]
        started_at = single.at("started")
        assert started_at is not None
        ahead = [j for j in flood_jobs if (t := j.at("started")) is not None and queued_at < t < started_at]
        assert len(ahead) <= 2, [j.at("started") for j in ahead]  # one ahead in turn, one in flight

        # 3. A replica started during the run serves at once, with no node of its own.
        await asyncio.to_thread(cluster.start_replica, "gw-d")
        ready = await asyncio.to_thread(cluster.readiness, "gw-d")
        assert ready["ready"] and ready["nodes_connected"] == 4, ready
        assert await asyncio.to_thread(cluster.local_nodes, "gw-d") == 0
        late = await client.run("gw-d", accounts[0])
        assert late.outcome == "completed"

        # 4. A replica SIGKILLed mid-run.
        batch = [
            await client.submit(name, accounts[i % 2])
            for i, name in enumerate(["gw-a", "gw-b", "gw-c", "gw-d"] * 4)
        ]
        following = [asyncio.create_task(client.follow(job, keys[job.account])) for job in batch]
        await wait_for(lambda: sum(1 for j in batch if j.at("started")) >= 4, 30, "the batch under way")
        await asyncio.to_thread(cluster.replicas["gw-a"].kill)
        await asyncio.gather(*following)
        survivors = ["gw-b", "gw-c", "gw-d"]
        for job in batch:
            if job.replica in survivors:
                assert job.outcome == "completed", job  # re-queued if its node was on gw-a
        # The killed replica's nodes came back through the balancer, and it left the network.
        for name in survivors:
            await wait_for(
                lambda n=name: cluster.readiness(n).get("nodes_connected") == 4, 30, f"{name} sees 4"
            )
        local = {name: await asyncio.to_thread(cluster.local_nodes, name) for name in survivors}
        assert sum(local.values()) == 4, local
        after = await asyncio.gather(*(client.run(name, accounts[1]) for name in survivors))
        assert [job.outcome for job in after] == ["completed"] * 3

    # 5. Every accepted job ended exactly once: charged when delivered, refunded otherwise; the
    #    killed replica's own jobs are resolved by billing (their holds expire).
    db = sqlite3.connect(cluster.data_dir / "billing.db")
    try:
        holds = {job.job_id: hold_id(job.job_id, 0) for job in client.followed}
        deadline = time.monotonic() + HOLD_TTL_SECONDS + 4 * SWEEP_SECONDS + 20
        while True:
            states = {
                job_id: db.execute("SELECT state FROM holds WHERE job_id = ?", (hold,)).fetchone()
                for job_id, hold in holds.items()
            }
            if all(row is not None and row[0] != HELD for row in states.values()):
                break
            assert time.monotonic() < deadline, "holds left unresolved"
            await asyncio.sleep(0.5)
        for job in client.followed:
            (state,) = states[job.job_id]
            if job.outcome == "completed":
                assert state == CAPTURED, job
            elif job.replica != "gw-a":
                raise AssertionError(f"a job on a surviving replica did not complete: {job}")
            (net,) = db.execute(
                "SELECT coalesce(sum(amount), 0) FROM ledger WHERE job_id = ? AND account = ?",
                (holds[job.job_id], job.account),
            ).fetchone()
            assert net == (-PRICE if state == CAPTURED else 0), (job, state, net)
        for account in accounts:
            (captured,) = db.execute(
                "SELECT count(*) FROM holds WHERE account_id = ? AND state = ?",
                (account.account_id, CAPTURED),
            ).fetchone()
            balance = (await asyncio.to_thread(cluster.mesh.account, account.account_id)).balance
            assert GRANT - balance == PRICE * captured
    finally:
        db.close()
    store = await Store.open(BillingSettings(data_dir=cluster.data_dir), migrate=False)
    try:
        report = await store.audit()
        assert report.ok, report.problems
    finally:
        await store.close()
    lost = [states[job.job_id][0] for job in client.followed if job.outcome == "lost"]
    print(
        f"\nnetwork: {len(client.followed)} jobs; with the killed replica {len(lost)} lost their client, "
        f"of which {lost.count(CAPTURED)} charged (rendered before the kill) and the rest refunded"
    )
