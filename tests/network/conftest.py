"""Gateway replicas as real processes sharing one billing, one moderation and one Redis.

Render nodes (test peers, and a real render node with the built-in test model) reach the
replicas through one TCP load balancer, so each node's stream lands on one replica, as it would
from the Internet. Every address is learnt from the services' TALOS_READY lines.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from talos_dev.mesh import LocalMesh
from talos_dev.procs import ServiceProcess, python_module

from ..conftest import IN_CI, mesh_moderation_env
from .balancer import TcpBalancer

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
HOLD_TTL_SECONDS = 15.0
SWEEP_SECONDS = 0.5

REPLICA_ENV = {
    "TALOS_GATEWAY_HOST": "127.0.0.1",
    "TALOS_GATEWAY_HTTP_PORT": "0",
    "TALOS_GATEWAY_GRPC_PORT": "0",
    "TALOS_GATEWAY_RELAY_PORT": "0",
    "TALOS_GATEWAY_PEER_PORT": "0",
    "TALOS_GATEWAY_REDIS_URL": REDIS_URL,
    "TALOS_GATEWAY_REPLICA_HEARTBEAT_SECONDS": "0.5",
    "TALOS_GATEWAY_REPLICA_TTL_SECONDS": "2",
    "TALOS_GATEWAY_CLAIM_EVERY_SECONDS": "0.5",
    "TALOS_GATEWAY_HEARTBEAT_SECONDS": "1",
    "TALOS_GATEWAY_NODE_SILENCE_SECONDS": "5",
    "TALOS_GATEWAY_QUEUE_TIMEOUT_SECONDS": "60",
    "TALOS_GATEWAY_DOWNSTREAM_TIMEOUT_SECONDS": "3",
    "TALOS_GATEWAY_MAX_CONCURRENT_JOBS_PER_KEY": "64",
    "TALOS_GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
    "TALOS_GATEWAY_DRAIN_GRACE_SECONDS": "2",
}


def redis_reachable() -> bool:
    from redis import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def drop_network(name: str) -> None:
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"talos:{name}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class Cluster:
    data_dir: Path
    network: str
    mesh: LocalMesh
    balancer: TcpBalancer
    replicas: dict[str, ServiceProcess] = field(default_factory=dict)
    nodes: list[ServiceProcess] = field(default_factory=list)

    def start_replica(self, name: str) -> ServiceProcess:
        env = {
            **REPLICA_ENV,
            "TALOS_GATEWAY_BILLING_ADDR": self.mesh.billing_addr,
            "TALOS_GATEWAY_MODERATION_ADDR": self.mesh.moderation_addr,
            "TALOS_GATEWAY_RELAY_NETWORK": self.network,
            "TALOS_GATEWAY_REPLICA_ID": name,
        }
        proc = ServiceProcess(
            name, python_module("talos_gateway"), env, self.data_dir / "logs" / f"{name}.log"
        )
        proc.start(timeout=120)
        self.replicas[name] = proc
        self.balancer.add(str(proc.ready["relay"]))
        return proc

    def http(self, name: str) -> str:
        return str(self.replicas[name].ready["http"])

    def readiness(self, name: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.http(name) + "/readyz", timeout=5) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            return dict(json.loads(error.read() or b"{}"))

    def local_nodes(self, name: str) -> int:
        """The nodes whose stream reached this replica (its own gauge, not the network's)."""
        with urllib.request.urlopen(self.http(name) + "/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("talos_relay_nodes_connected "):
                    return int(float(line.split()[1]))
        raise AssertionError("no talos_relay_nodes_connected gauge")

    def add_peer(self, name: str, step_delay: float) -> ServiceProcess:
        """A test-peer node dialling the balancer, re-dialling it whenever its stream ends."""
        token = self.mesh.create_node_token(name)
        argv = python_module(
            "tests.relay.peer", "--relay", self.balancer.address, "--token", token,
            "--step-delay", str(step_delay), "--reconnect",
        )  # fmt: skip
        proc = ServiceProcess(name, argv, {}, self.data_dir / "logs" / f"{name}.log", cwd=REPO)
        proc.start(timeout=60)
        self.nodes.append(proc)
        return proc

    def add_render_node(self, name: str) -> ServiceProcess:
        """A real render node (built-in test model, CPU) dialling the balancer."""
        env = {
            "TALOS_RENDER_RELAY": self.balancer.address,
            "TALOS_RENDER_TOKEN": self.mesh.create_node_token(name),
            "TALOS_RENDER_MODEL": "builtin",
            "TALOS_RENDER_DATA_DIR": str(self.data_dir / "models"),
            "TALOS_RENDER_HEALTH_HOST": "127.0.0.1",
            "TALOS_RENDER_HEALTH_PORT": "0",
            "TALOS_RENDER_METRICS_PORT": "0",
            "TALOS_RENDER_CONCURRENCY": "1",
            "TALOS_RENDER_RECONNECT_MAX_SECONDS": "1",
            "TALOS_RENDER_WARMUP_STEPS": "1",
        }
        proc = ServiceProcess(
            name, python_module("talos_render"), env, self.data_dir / "logs" / f"{name}.log"
        )
        proc.start(timeout=300)
        self.nodes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in [*self.nodes, *self.replicas.values()]:
            proc.stop(timeout=10)
        self.balancer.stop()
        self.mesh.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if not redis_reachable():
        if IN_CI:
            pytest.fail(f"Redis is not reachable at {REDIS_URL} (CI must provide it)")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    mesh = LocalMesh(
        tmp_path,
        billing_env={
            "TALOS_BILLING_HOLD_TTL_SECONDS": str(HOLD_TTL_SECONDS),
            "TALOS_BILLING_SWEEP_SECONDS": str(SWEEP_SECONDS),
        },
        moderation_env=mesh_moderation_env(),
    )
    network = "test-" + secrets.token_hex(6)
    balancer = TcpBalancer().start()
    cluster = Cluster(tmp_path, network, mesh, balancer)
    try:
        mesh.start_billing()
        mesh.start_moderation()
        yield cluster
    finally:
        cluster.stop()
        drop_network(network)
