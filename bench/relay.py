"""Relay benchmark: dispatch latency and throughput with 100 and 1,000 connected node streams.

A real relay (``talos_gateway.relay.Relay`` and its gRPC server on loopback) serves many
simulated nodes: the relay test peer (``tests/relay/peer.py``) answering every job at once with
progress and a tiny valid image, so what is measured is the relay, not rendering. Each node is
its own gRPC channel (its own TCP connection), as real nodes are.

By default the simulated nodes run in a child process, so the relay's process time per job can
be read apart from the peers' (``--in-process`` puts them on the relay's event loop instead).

Printed per node count: connect time and memory per stream, dispatch latency (``run()`` to the
node's JobAccepted, one loopback round trip included) with idle nodes, end-to-end latency
and throughput with many jobs in flight, and the relay's CPU per job. Also the cost of checking
one full-size result image (decode in a worker thread), which real jobs add on top.

With the Redis at ``--redis`` reachable, the network section runs two replicas of one relay
network (this process, and a child process), each with its own simulated nodes in their own
child processes. Jobs are submitted to this replica one at a time, alternately of a size only
its own nodes render (local: claimed in-process) and of a size only the other replica's nodes
render (remote: announced, claimed there, fetched over the peer link); it prints dispatch
latency (``run()`` to Started) for both and the cost of the extra hop.

    .venv/bin/python bench/relay.py                   # 100 and 1,000 nodes, then the network
    .venv/bin/python bench/relay.py --nodes 100 --jobs 500
    .venv/bin/python bench/relay.py --network-only --network-jobs 1000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from talos_common.errors import TalosError  # noqa: E402
from talos_gateway.config import Settings  # noqa: E402
from talos_gateway.relay import Relay, start_relay_server  # noqa: E402
from talos_gateway.relay.contract import Finished, RenderSpec, Started  # noqa: E402
from talos_gateway.relay.validate import check_image  # noqa: E402
from tests.relay.peer import PeerNode  # noqa: E402

SIZE = 256  # the tiny image every simulated node returns (decoded and checked by the relay)
STEPS = 2


def spec(seed: int) -> RenderSpec:
    return RenderSpec("bench", "", SIZE, SIZE, STEPS, 5.0, seed, "png")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------------- the simulated nodes
async def serve_peers(address: str, count: int, first: int, size: int = SIZE) -> None:
    """Child-process mode: ``count`` peers dial ``address``; prints READY once all are welcomed."""
    peers = [
        PeerNode(
            address, f"bench-{first + i}", sizes=(f"{size}x{size}",), concurrency=1, seconds_per_step=0.01
        )
        for i in range(count)
    ]
    for batch in range(0, count, 100):
        await asyncio.gather(*(p.start(within=60) for p in peers[batch : batch + 100]))
    failed = sum(1 for p in peers if not p.links[0].welcomed.is_set())
    print(json.dumps({"ready": count - failed, "failed": failed}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    for peer in peers:
        await peer.stop()


class Peers:
    """N simulated nodes, in a child process or on this loop."""

    def __init__(self, address: str, count: int, in_process: bool, size: int = SIZE, first: int = 0) -> None:
        self.address, self.count, self.in_process = address, count, in_process
        self.size, self.first = size, first
        self.proc: asyncio.subprocess.Process | None = None
        self.local: list[PeerNode] = []

    async def start(self) -> None:
        if self.in_process:
            self.local = [
                PeerNode(
                    self.address,
                    f"bench-{self.first + i}",
                    sizes=(f"{self.size}x{self.size}",),
                    seconds_per_step=0.01,
                )
                for i in range(self.count)
            ]
            for batch in range(0, self.count, 100):
                await asyncio.gather(*(p.start(within=60) for p in self.local[batch : batch + 100]))
            return
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve-peers",
            self.address,
            "--count",
            str(self.count),
            "--first",
            str(self.first),
            "--size",
            str(self.size),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=300)
        info = json.loads(line)
        if info["failed"]:
            raise RuntimeError(f"{info['failed']} simulated nodes were not welcomed")

    async def stop(self) -> None:
        for peer in self.local:
            await peer.stop()
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# ---------------------------------------------------------------------- measurements
async def one_job(relay: Relay, job_id: str, seed: int) -> tuple[float, float]:
    """Seconds to Started (dispatch) and to Finished (the whole relay round)."""
    start = time.perf_counter()
    dispatched = 0.0
    async for event in relay.run(job_id, "acct-" + str(seed % 50), spec(seed)):
        if isinstance(event, Started):
            dispatched = time.perf_counter() - start
        elif isinstance(event, Finished):
            return dispatched, time.perf_counter() - start
    raise RuntimeError("no Finished")


async def sequential(relay: Relay, tag: str, jobs: int) -> tuple[list[float], list[float]]:
    dispatch, total = [], []
    for i in range(jobs):
        d, t = await one_job(relay, f"{tag}-{i}", i)
        dispatch.append(d)
        total.append(t)
    return dispatch, total


async def loaded(relay: Relay, tag: str, jobs: int, in_flight: int) -> dict[str, Any]:
    dispatch: list[float] = []
    total: list[float] = []
    counter = iter(range(jobs))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in counter:
            try:
                d, t = await one_job(relay, f"{tag}-{i}", i)
            except TalosError:
                failures += 1
                continue
            dispatch.append(d)
            total.append(t)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "jobs_per_s": len(total) / wall,
        "dispatch_p50_ms": pct(dispatch, 0.5) * 1e3,
        "dispatch_p99_ms": pct(dispatch, 0.99) * 1e3,
        "total_p50_ms": pct(total, 0.5) * 1e3,
        "total_p99_ms": pct(total, 0.99) * 1e3,
        "cpu_ms_per_job": cpu / max(1, len(total)) * 1e3,
        "failures": failures,
    }


async def bench_nodes(count: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = dataclasses.replace(
        Settings(),
        host="127.0.0.1",
        relay_port=0,
        queue_bound=100_000,
        queue_bound_per_account=100_000,
        queue_timeout_seconds=300.0,
        heartbeat_seconds=10.0,
    )

    async def authenticate(token: str) -> str:
        if not token.startswith("bench-"):
            raise TalosError("invalid_api_key", "unknown token")
        return "node-" + token.removeprefix("bench-")

    relay = Relay(settings, authenticate)
    server, port = await start_relay_server(relay, settings)
    peers = Peers(f"127.0.0.1:{port}", count, args.in_process)
    rss0 = rss_mib()
    t0 = time.perf_counter()
    try:
        await peers.start()
        while relay.status()["nodes_idle"] < count:  # noqa: ASYNC110 - polling the relay's own counter
            await asyncio.sleep(0.05)
        connect_s = time.perf_counter() - t0
        rss_per_node_kib = (rss_mib() - rss0) * 1024 / count
        await loaded(relay, f"warm{count}", min(args.jobs, 300), 32)
        seq_dispatch, seq_total = await sequential(relay, f"seq{count}", args.sequential)
        load = await loaded(relay, f"load{count}", args.jobs, args.in_flight)
        return {
            "nodes": count,
            "connect_s": connect_s,
            "rss_per_node_kib": rss_per_node_kib,
            "idle_dispatch_p50_ms": pct(seq_dispatch, 0.5) * 1e3,
            "idle_dispatch_p99_ms": pct(seq_dispatch, 0.99) * 1e3,
            "idle_total_p50_ms": pct(seq_total, 0.5) * 1e3,
            "idle_total_p99_ms": pct(seq_total, 0.99) * 1e3,
            **load,
        }
    finally:
        await peers.stop()
        await relay.close()
        await server.stop(None)


def validation_cost() -> dict[str, float]:
    """Milliseconds to check one 1024x1024 result (what a real job adds, in a worker thread)."""
    import numpy as np
    from PIL import Image

    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for kind, image in (
        ("flat", Image.new("RGB", (1024, 1024), (40, 90, 160))),
        ("noise", Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8))),
    ):
        for fmt in ("png", "jpeg", "webp"):
            buf = io.BytesIO()
            image.save(buf, format=fmt.upper())
            data = buf.getvalue()
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                check_image(data, fmt, 1024, 1024, max_bytes=24 << 20, max_pixels=1 << 24)
                runs.append(time.perf_counter() - t)
            out[f"{kind}_{fmt}_ms"] = statistics.median(runs) * 1e3
    return out


# ---------------------------------------------------------------------- the relay network
NETWORK_LOCAL_SIZE, NETWORK_REMOTE_SIZE = 256, 320
NETWORK_NODES = 4


def network_settings(redis_url: str, network: str) -> Settings:
    return dataclasses.replace(
        Settings(),
        host="127.0.0.1",
        relay_port=0,
        peer_port=0,
        redis_url=redis_url,
        relay_network=network,
        queue_bound=10_000,
        queue_bound_per_account=10_000,
        heartbeat_seconds=10.0,
    )


async def network_authenticate(token: str) -> str:
    if not token.startswith("bench-"):
        raise TalosError("invalid_api_key", "unknown token")
    return "node-" + token.removeprefix("bench-")


async def serve_replica(redis_url: str, network: str) -> None:
    """Child-process mode: the other replica, whose nodes render only the remote size."""
    settings = network_settings(redis_url, network)
    relay = Relay(settings, network_authenticate)
    server, port = await start_relay_server(relay, settings)
    peers = Peers(f"127.0.0.1:{port}", NETWORK_NODES, False, NETWORK_REMOTE_SIZE, first=1000)
    await peers.start()
    while relay.status()["local_nodes_idle"] < NETWORK_NODES:  # noqa: ASYNC110 - the relay's own counter
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await peers.stop()
    await relay.close()
    await server.stop(None)


async def redis_reachable(url: str) -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def drop_network(url: str, network: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"talos:{network}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def dispatch_once(relay: Relay, job_id: str, size: int) -> float:
    spec = RenderSpec("bench", "", size, size, STEPS, 5.0, 1, "png")
    start = time.perf_counter()
    dispatched = 0.0
    async for event in relay.run(job_id, "acct-" + job_id[-1], spec):
        if isinstance(event, Started):
            dispatched = time.perf_counter() - start
        elif isinstance(event, Finished):
            return dispatched
    raise RuntimeError("no Finished")


async def bench_network(args: argparse.Namespace) -> dict[str, Any] | None:
    if not await redis_reachable(args.redis):
        print(f"network section skipped: no Redis at {args.redis}")
        return None
    network = f"bench-{os.getpid()}"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-replica",
        network,
        "--redis",
        args.redis,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    settings = network_settings(args.redis, network)
    relay = Relay(settings, network_authenticate)
    server, port = await start_relay_server(relay, settings)
    peers = Peers(f"127.0.0.1:{port}", NETWORK_NODES, False, NETWORK_LOCAL_SIZE)
    try:
        assert child.stdout is not None
        await asyncio.wait_for(child.stdout.readline(), timeout=120)
        await peers.start()
        while relay.status()["nodes_idle"] < 2 * NETWORK_NODES:  # noqa: ASYNC110 - the relay's own counter
            await asyncio.sleep(0.05)
        for i in range(50):  # warm both paths (channels, scripts, caches)
            await dispatch_once(relay, f"warm-l{i}", NETWORK_LOCAL_SIZE)
            await dispatch_once(relay, f"warm-r{i}", NETWORK_REMOTE_SIZE)
        local: list[float] = []
        remote: list[float] = []
        for i in range(args.network_jobs):
            local.append(await dispatch_once(relay, f"local-{i}", NETWORK_LOCAL_SIZE))
            remote.append(await dispatch_once(relay, f"remote-{i}", NETWORK_REMOTE_SIZE))
        return {
            "jobs": args.network_jobs,
            "local_p50_ms": pct(local, 0.5) * 1e3,
            "local_p99_ms": pct(local, 0.99) * 1e3,
            "remote_p50_ms": pct(remote, 0.5) * 1e3,
            "remote_p99_ms": pct(remote, 0.99) * 1e3,
        }
    finally:
        await peers.stop()
        await relay.close()
        await server.stop(None)
        assert child.stdin is not None
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), timeout=30)
        except TimeoutError:
            child.kill()
            await child.wait()
        await drop_network(args.redis, network)


def print_network(result: dict[str, Any]) -> None:
    print(
        f"relay network: two replicas (this process and a child), {NETWORK_NODES} simulated nodes each, "
        f"Redis queue; {result['jobs']} jobs each way, one at a time, alternating"
    )
    print(f"{'dispatch (run() to Started)':<30} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'node on this replica':<30} {result['local_p50_ms']:>8.2f} {result['local_p99_ms']:>8.2f}")
    print(
        f"{'node on the other replica':<30} {result['remote_p50_ms']:>8.2f} {result['remote_p99_ms']:>8.2f}"
    )
    extra = result["remote_p50_ms"] - result["local_p50_ms"]
    print(f"the extra hop costs {extra:.2f} ms at p50 (target: <= 3 ms)")


async def main(args: argparse.Namespace) -> None:
    if args.network_only:
        network = await bench_network(args)
        if network is not None:
            print_network(network)
        return
    results = []
    for count in args.nodes:
        result = await bench_nodes(count, args)
        results.append(result)
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}), flush=True
        )
    print()
    machine = f"{platform.node()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    print(f"relay benchmark: {machine}, grpcio {grpc.__version__}")
    where = "in-process" if args.in_process else "in a child process"
    print(f"peers {where}; {STEPS} steps, {SIZE}x{SIZE} png per job;")
    print(
        f"{args.sequential} jobs one at a time (idle nodes), then {args.jobs} with {args.in_flight} in flight"
    )
    header = (
        f"{'nodes':>6} {'connect s':>9} {'KiB/node':>8} {'idle disp p50/p99 ms':>21} "
        f"{'idle total p50/p99':>19} {'load disp p50/p99':>18} {'load total p50/p99':>19} "
        f"{'jobs/s':>7} {'cpu ms/job':>10}"
    )
    print(header)
    for r in results:
        print(
            f"{r['nodes']:>6} {r['connect_s']:>9.2f} {r['rss_per_node_kib']:>8.1f} "
            f"{r['idle_dispatch_p50_ms']:>10.2f}/{r['idle_dispatch_p99_ms']:<10.2f} "
            f"{r['idle_total_p50_ms']:>9.2f}/{r['idle_total_p99_ms']:<9.2f} "
            f"{r['dispatch_p50_ms']:>8.2f}/{r['dispatch_p99_ms']:<9.2f} "
            f"{r['total_p50_ms']:>9.2f}/{r['total_p99_ms']:<9.2f} "
            f"{r['jobs_per_s']:>7.0f} {r['cpu_ms_per_job']:>10.2f}"
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(
            f"from {a['nodes']} to {b['nodes']} nodes ({b['nodes'] / a['nodes']:.0f}x): "
            f"idle dispatch p50 x{b['idle_dispatch_p50_ms'] / a['idle_dispatch_p50_ms']:.2f}, "
            f"throughput x{b['jobs_per_s'] / a['jobs_per_s']:.2f}, "
            f"cpu per job x{b['cpu_ms_per_job'] / a['cpu_ms_per_job']:.2f}"
        )
    if not args.skip_validation:
        print(
            "checking one 1024x1024 result (full decode), ms:",
            json.dumps({k: round(v, 1) for k, v in validation_cost().items()}),
        )
    if not args.skip_network:
        print()
        network = await bench_network(args)
        if network is not None:
            print_network(network)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs in the loaded phase")
    parser.add_argument("--sequential", type=int, default=300, help="jobs one at a time, idle nodes")
    parser.add_argument("--in-flight", type=int, default=64, help="jobs in flight in the loaded phase")
    parser.add_argument("--in-process", action="store_true", help="simulated nodes on the relay's loop")
    parser.add_argument("--skip-validation", action="store_true")
    parser.add_argument("--skip-network", action="store_true", help="skip the two-replica section")
    parser.add_argument("--network-only", action="store_true", help="run only the two-replica section")
    parser.add_argument("--network-jobs", type=int, default=500, help="jobs each way in the network section")
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/0", help="the Redis of the network section"
    )
    parser.add_argument("--serve-peers", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--serve-replica", metavar="NETWORK", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=SIZE, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve_peers:
        asyncio.run(serve_peers(arguments.serve_peers, arguments.count, arguments.first, arguments.size))
    elif arguments.serve_replica:
        asyncio.run(serve_replica(arguments.redis, arguments.serve_replica))
    else:
        asyncio.run(main(arguments))
