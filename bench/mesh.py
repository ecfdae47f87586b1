"""Mesh overhead benchmark: what the gateway, moderation, billing and the relay add to a render.

Part 1, overhead: the same render (built-in test model, 1024², ``--steps`` steps) called
directly on the pipeline in this process, then end to end through HTTP and through gRPC
against a real mesh (billing, moderation, gateway and one render node as processes). The
overhead per image is each end-to-end time minus the median direct time; printed for 18+ on
(no output classification) and 18+ off (ClassifyImage on every image).

Part 2, relay throughput: the real gateway process serves many concurrent gRPC clients while
simulated nodes (the relay's test peer) answer every job at once with a valid image, so only
the mesh is measured. Images per second and images per second per gateway CPU-second.

    .venv/bin/python bench/mesh.py [--requests 30] [--clients 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from talos.api.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from talos_common.mesh import LocalMesh  # noqa: E402
from tests.relay.peer import PeerNode  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_times(steps: int, count: int, data_dir: Path) -> list[float]:
    """The node's own pipeline, in this process: render and PNG encode, nothing else."""
    from talos_render.config import Settings
    from talos_render.engine import Engine, RenderRequest
    from talos_render.loading import load

    settings = Settings(model="builtin", data_dir=data_dir, device="cpu")
    engine = Engine(load(settings))
    request = RenderRequest("a lighthouse at dusk", "", 1024, 1024, steps, 5.0, 7, "png", 0)

    async def run() -> list[float]:
        times = []
        for _ in range(count + 2):
            started = time.perf_counter()
            await engine.render(request, lambda *a: None, threading.Event())
            times.append(time.perf_counter() - started)
        return times[2:]

    try:
        return asyncio.run(run())
    finally:
        engine.close()


def http_times(mesh: LocalMesh, key: str, steps: int, count: int, nsfw: bool) -> list[float]:
    body = json.dumps({"prompt": "a lighthouse at dusk", "steps": steps, "seed": 7, "nsfw": nsfw}).encode()
    times = []
    for _ in range(count):
        request = urllib.request.Request(
            mesh.http_url + "/v1/images/generations",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = json.loads(response.read())
        base64.b64decode(payload["data"][0]["b64_json"])
        times.append(time.perf_counter() - started)
    return times


def grpc_times(mesh: LocalMesh, key: str, steps: int, count: int, nsfw: bool) -> list[float]:
    times = []
    with grpc.insecure_channel(mesh.grpc_addr, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        stub = api_pb2_grpc.ImageServiceStub(ch)
        request = api_pb2.GenerateRequest(prompt="a lighthouse at dusk", steps=steps, seed=7, nsfw=nsfw)
        for _ in range(count):
            started = time.perf_counter()
            events = list(stub.Generate(request, metadata=[("authorization", f"Bearer {key}")], timeout=120))
            assert events[-1].WhichOneof("event") == "completed", events[-1]
            times.append(time.perf_counter() - started)
    return times


def overhead_line(label: str, times: list[float], direct: float) -> str:
    over = [(t - direct) * 1000 for t in times]
    return (
        f"{label:<26} end-to-end p50 {statistics.median(times) * 1000:8.1f} ms   "
        f"overhead p50 {pct(over, 0.5):7.1f} ms  p99 {pct(over, 0.99):7.1f} ms"
    )


async def throughput(
    mesh: LocalMesh, key: str, clients: int, seconds: float, nodes: int
) -> tuple[int, float]:
    peers = [
        PeerNode(mesh.relay_addr, mesh.create_node_token(f"sim-{n}"), concurrency=4, name=f"sim-{n}")
        for n in range(nodes)
    ]
    for peer in peers:
        await peer.start()
    assert mesh.gateway is not None
    done = 0
    stop_at = time.monotonic() + seconds
    request = api_pb2.GenerateRequest(prompt="a lighthouse at dusk", steps=2, nsfw=True)
    async with grpc.aio.insecure_channel(
        mesh.grpc_addr, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = api_pb2_grpc.ImageServiceStub(channel)

        async def client() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                async for event in stub.Generate(
                    request, metadata=[("authorization", f"Bearer {key}")], timeout=60
                ):
                    if event.WhichOneof("event") == "completed":
                        done += 1

        cpu_before = cpu_seconds(mesh.gateway.pid)
        await asyncio.gather(*(client() for _ in range(clients)))
        cpu = cpu_seconds(mesh.gateway.pid) - cpu_before
    for peer in peers:
        await peer.stop()
    return done, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sim-nodes", type=int, default=16)
    args = parser.parse_args()

    import diffusers
    import torch

    print(
        f"mesh benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()}  {os.cpu_count()} cores  "
        f"python {platform.python_version()}  torch {torch.__version__}  diffusers {diffusers.__version__}  "
        f"grpcio {grpc.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        direct = direct_times(args.steps, args.requests, data)
        direct_p50 = statistics.median(direct)
        print(f"direct pipeline (1024², {args.steps} step(s), PNG): p50 {direct_p50 * 1000:.1f} ms")

        # One account drives every client, so its per-key limits are raised for the benchmark.
        mesh = LocalMesh(
            data / "mesh",
            billing_env={"TALOS_BILLING_LOG_LEVEL": "warning"},
            gateway_env={
                "TALOS_GATEWAY_MAX_CONCURRENT_JOBS_PER_KEY": "100000",
                "TALOS_GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000",
            },
        )
        try:
            mesh.start(nodes=1)
            account = mesh.create_account(10_000_000)
            urllib.request.urlopen(
                urllib.request.Request(
                    mesh.http_url + "/v1/account/age-confirmation",
                    data=b'{"confirm": true}',
                    headers={
                        "Authorization": f"Bearer {account.api_key}",
                        "Content-Type": "application/json",
                    },
                ),
                timeout=10,
            ).read()
            grpc_times(mesh, account.api_key, args.steps, 2, True)  # warm the channels
            for nsfw in (True, False):
                label = "18+ on (no classifier)" if nsfw else "18+ off (ClassifyImage)"
                print(
                    overhead_line(
                        f"HTTP, {label}",
                        http_times(mesh, account.api_key, args.steps, args.requests, nsfw),
                        direct_p50,
                    )
                )
                print(
                    overhead_line(
                        f"gRPC, {label}",
                        grpc_times(mesh, account.api_key, args.steps, args.requests, nsfw),
                        direct_p50,
                    )
                )

            # Part 2: only simulated nodes, so the render node must not take jobs.
            for node in mesh.nodes:
                node.stop()
            done, cpu = asyncio.run(
                throughput(mesh, account.api_key, args.clients, args.seconds, args.sim_nodes)
            )
            rate = done / args.seconds
            per_core = done / cpu if cpu else float("nan")
            print(
                f"relay throughput: {done} images in {args.seconds:.0f} s = {rate:.1f} images/s "
                f"with {args.clients} clients; gateway CPU {cpu:.2f} s = "
                f"{per_core:.1f} images per gateway CPU-second"
            )
        finally:
            mesh.stop()


if __name__ == "__main__":
    main()
