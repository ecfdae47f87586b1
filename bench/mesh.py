"""Mesh overhead benchmark: what the gateway, moderation, billing and the relay add to a render.

Part 1, overhead: the same render (built-in test model, 1024², ``--steps`` steps, the node's
one torch thread) called directly on the pipeline in this process, and end to end through HTTP
and through gRPC against a real mesh (billing, moderation, gateway and one render node as
processes), in interleaved rounds so that drift in the machine's speed falls on both sides.
Two overheads per image, printed for 18+ on (no output classification) and 18+ off
(ClassifyImage on every image): each end-to-end time minus the median direct time, and each
end-to-end time minus that same job's own time on the node (render and encode, read from the
node's log). At ~0.7 s a render, the render's own jitter (direct p99 is printed) is most of the
first figure's p99; the second takes the job's own render off, so it is what the mesh added to
that very image. The gateway's own per-job means from its /metrics follow.

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
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from talos.api.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from talos_dev.mesh import LocalMesh  # noqa: E402
from tests.relay.peer import PeerNode  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Direct:
    """The node's own pipeline, in this process: render and PNG encode, nothing else."""

    def __init__(self, steps: int, data_dir: Path) -> None:
        from talos_render.config import Settings
        from talos_render.engine import Engine, RenderRequest
        from talos_render.loading import load

        # The node's defaults (one torch thread on the CPU), so both sides do the same work.
        self.engine = Engine(load(Settings(model="builtin", data_dir=data_dir, device="cpu")))
        self.request = RenderRequest("a lighthouse at dusk", "", 1024, 1024, steps, 5.0, 7, "png", 0)
        self.loop = asyncio.new_event_loop()
        self.last_image = b""

    def once(self) -> float:
        started = time.perf_counter()
        output = self.loop.run_until_complete(
            self.engine.render(self.request, lambda *a: None, threading.Event())
        )
        self.last_image = output.image
        return time.perf_counter() - started

    def image(self) -> bytes:
        return self.last_image

    def close(self) -> None:
        self.engine.close()
        self.loop.close()


def http_once(mesh: LocalMesh, key: str, steps: int, nsfw: bool) -> tuple[float, str]:
    body = json.dumps({"prompt": "a lighthouse at dusk", "steps": steps, "seed": 7, "nsfw": nsfw}).encode()
    request = urllib.request.Request(
        mesh.http_url + "/v1/images/generations",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        payload = json.loads(response.read())
    base64.b64decode(payload["data"][0]["b64_json"])
    return time.perf_counter() - started, payload["job_id"]


class GrpcClient:
    """One channel for the whole run, as an SDK client keeps it."""

    def __init__(self, mesh: LocalMesh, key: str, steps: int) -> None:
        self.channel = grpc.insecure_channel(
            mesh.grpc_addr, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.stub = api_pb2_grpc.ImageServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {key}")]
        self.steps = steps

    def once(self, nsfw: bool) -> tuple[float, str]:
        request = api_pb2.GenerateRequest(prompt="a lighthouse at dusk", steps=self.steps, seed=7, nsfw=nsfw)
        started = time.perf_counter()
        events = list(self.stub.Generate(request, metadata=self.metadata, timeout=120))
        assert events[-1].WhichOneof("event") == "completed", events[-1]
        return time.perf_counter() - started, events[-1].job_id

    def close(self) -> None:
        self.channel.close()


def gateway_share(mesh: LocalMesh) -> str:
    """The gateway's own account of the runs above, from its /metrics (means per job)."""
    text = urllib.request.urlopen(mesh.http_url + "/metrics", timeout=10).read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        sums[name] = float(value)

    def mean_ms(metric: str, labels: str = "") -> float:
        count = sums.get(f"{metric}_count{labels}", 0.0)
        return 1000 * sums.get(f"{metric}_sum{labels}", 0.0) / count if count else float("nan")

    def downstream(method: str, service: str) -> float:
        labels = f'{{method="{method}",outcome="ok",service="{service}"}}'
        return mean_ms("talos_gateway_downstream_seconds", labels)

    return (
        f"gateway's own means per job: accepted→completed minus the node's render "
        f"{mean_ms('talos_gateway_job_overhead_seconds'):.1f} ms, of which result check "
        f"{mean_ms('talos_relay_result_validation_seconds'):.1f} ms, CheckPrompt "
        f"{downstream('CheckPrompt', 'moderation'):.1f} ms, Reserve "
        f"{downstream('ReserveMany', 'billing'):.1f} ms, Capture "
        f"{downstream('Capture', 'billing'):.1f} ms, ClassifyImage "
        f"{downstream('ClassifyImage', 'moderation'):.1f} ms (18+ off only)"
    )


def node_job_seconds(log_path: Path) -> dict[str, float]:
    """Each job's time on the node (render and encode, as the direct runs) from its log."""
    seconds = {}
    for line in log_path.read_text().splitlines():
        if '"job finished"' in line:
            entry = json.loads(line)
            seconds[entry["job_id"]] = float(entry["seconds"])
    return seconds


def overhead_line(
    label: str, runs: list[tuple[float, str]], direct: float, node_seconds: dict[str, float]
) -> str:
    times = [t for t, _ in runs]
    over = [(t - direct) * 1000 for t in times]
    # The same job's own render on the node taken off: what the mesh added to that very image.
    own = [(t - node_seconds[f"{job}.0"]) * 1000 for t, job in runs]  # the node knows image 0 of the job
    return (
        f"{label:<26} end-to-end p50 {statistics.median(times) * 1000:6.1f} ms | "
        f"minus direct p50: overhead p50 {pct(over, 0.5):6.1f} p99 {pct(over, 0.99):6.1f} ms | "
        f"minus the job's own node time: p50 {pct(own, 0.5):6.1f} p99 {pct(own, 0.99):6.1f} ms"
    )


class _OneImage(api_pb2_grpc.ImageServiceServicer):
    """Streams one Completed event carrying the given image, as the gateway's last message does."""

    def __init__(self, image: bytes) -> None:
        self.image = image

    async def Generate(
        self, request: api_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_pb2.JobEvent]:
        yield api_pb2.JobEvent(job_id="floor", completed=api_pb2.Completed(image=self.image))


def transfer_floor(image: bytes, count: int) -> list[float]:
    """The image's last hop alone: a bare grpc.aio server (its own thread and loop) streaming the
    same bytes to the same kind of client. A relayed image makes this trip twice (node to
    gateway, gateway to client), so twice this is the least any relay of it could add."""
    loop = asyncio.new_event_loop()
    server_ready = threading.Event()
    port = 0

    async def serve(stop: asyncio.Event) -> None:
        nonlocal port
        server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
        api_pb2_grpc.add_ImageServiceServicer_to_server(_OneImage(image), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        server_ready.set()
        await stop.wait()
        await server.stop(None)

    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(stop),), daemon=True)
    thread.start()
    server_ready.wait(30)
    times = []
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            stub = api_pb2_grpc.ImageServiceStub(channel)
            for _ in range(count + 3):
                started = time.perf_counter()
                events = list(stub.Generate(api_pb2.GenerateRequest(prompt="x"), timeout=30))
                assert events[-1].completed.image == image
                times.append(time.perf_counter() - started)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
    return times[3:]


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
        direct = Direct(args.steps, data)
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
            client = GrpcClient(mesh, account.api_key, args.steps)
            modes: dict[str, Callable[[], tuple[float, str]]] = {}
            for nsfw in (True, False):
                label = "18+ on (no classifier)" if nsfw else "18+ off (ClassifyImage)"
                modes[f"HTTP, {label}"] = partial(http_once, mesh, account.api_key, args.steps, nsfw)
                modes[f"gRPC, {label}"] = partial(client.once, nsfw)
            for _ in range(2):  # warm every path
                direct.once()
                for run in modes.values():
                    run()
            # Rounds of one direct render and one of each end-to-end kind, so that drift in the
            # machine's speed falls on both sides alike.
            direct_times: list[float] = []
            times: dict[str, list[tuple[float, str]]] = {label: [] for label in modes}
            for _ in range(args.requests):
                direct_times.append(direct.once())
                for label, run in modes.items():
                    times[label].append(run())
            node_seconds = node_job_seconds(mesh.nodes[0].log_path)
            client.close()
            direct_p50 = statistics.median(direct_times)
            print(
                f"direct pipeline (1024², {args.steps} step(s), PNG, this process): "
                f"p50 {direct_p50 * 1000:.1f} ms"
                f"  p99 {pct(direct_times, 0.99) * 1000:.1f} ms  (the render's own spread)"
            )
            for label, runs in times.items():
                print(overhead_line(label, runs, direct_p50, node_seconds))
            print(gateway_share(mesh))
            floor = transfer_floor(direct.image(), args.requests)
            print(
                f"floor: the same PNG ({len(direct.image()) / 1024:.0f} KiB) streamed once by a bare "
                f"gRPC server to the same client: p50 {pct(floor, 0.5) * 1000:.1f} ms  "
                f"p99 {pct(floor, 0.99) * 1000:.1f} ms (a relayed image travels twice)"
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
            direct.close()


if __name__ == "__main__":
    main()
