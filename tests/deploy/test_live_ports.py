"""Each service started as a real process with its container's settings from the dev overlay:
the ports the probes, Services and scrape annotations name are really opened by the setting
they come from, the gRPC ones answer grpc.health.v1 SERVING (what a kubelet ``grpc:`` probe
asks), and the metrics ports serve Prometheus text.

Only what cannot work outside a pod is changed: listeners on 127.0.0.1 with free ports instead
of 0.0.0.0 with the fixed ones, data folders under a temporary folder (the render node's under
var/, so its built-in test model is built once), billing on SQLite, and addresses pointing at
the other live processes.
"""

from __future__ import annotations

import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_dev.procs import ServiceProcess, python_module
from tests.deploy import k8s, podenv

START_TIMEOUT = 180.0
# The render node's data folder holds only the built-in test model, built once (~30 s on a busy
# 2-core machine) and reused by later runs; var/ is git-ignored.
RENDER_CACHE = k8s.REPO / "var" / "test-cache" / "deploy-render"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pod_environment(docs: list[dict[str, Any]], service: str) -> dict[str, str]:
    """The TALOS_* variables the service's container gets from the overlay and its image."""
    for _, container, svc in k8s.talos_containers(docs):
        if svc == service:
            env = podenv.container_environment(container, docs, k8s.image_env(service, container["image"]))
            return {k: v for k, v in env.values.items() if k.startswith("TALOS_") and k not in env.secret}
    raise KeyError(service)


class Live:
    """The four services as processes; every port is chosen before anything starts."""

    def __init__(self, docs: list[dict[str, Any]], tmp: Path) -> None:
        self.docs = docs
        self.tmp = tmp
        self.ports: dict[str, dict[str, int]] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.procs: dict[str, ServiceProcess] = {}
        for service in k8s.SERVICES:
            self.ports[service] = {port.name: free_port() for port in k8s.SERVICES[service].ports}

    def address(self, service: str, port: str) -> str:
        return f"127.0.0.1:{self.ports[service][port]}"

    def prepare(self, service: str, **overrides: str) -> None:
        spec = k8s.SERVICES[service]
        prefix = spec.prefix()
        env = pod_environment(self.docs, service)
        for port in spec.ports:
            env[prefix + port.host_field.upper()] = "127.0.0.1"
            env[prefix + port.port_field.upper()] = str(self.ports[service][port.name])
        for field in spec.writable_fields:
            env[prefix + field.upper()] = str(self.tmp / service)
        env.update({prefix + k.upper(): v for k, v in overrides.items()})
        self.envs[service] = env

    def start(self, service: str, **more: str) -> ServiceProcess:
        prefix = k8s.SERVICES[service].prefix()
        env = {**self.envs[service], **{prefix + k.upper(): v for k, v in more.items()}}
        proc = ServiceProcess(
            service,
            python_module(k8s.SERVICES[service].module),
            env,
            self.tmp / "logs" / f"{service}.log",
            cwd=self.tmp,
        )
        self.procs[service] = proc
        proc.start(timeout=START_TIMEOUT)
        return proc

    def stop(self) -> None:
        for service in ("render", "gateway", "moderation", "billing"):  # nodes first, billing last
            if service in self.procs:
                self.procs[service].stop(timeout=30)


@pytest.fixture(scope="module")
def live(
    rendered: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    mesh = Live(rendered["dev"], tmp_path_factory.mktemp("live"))
    mesh.prepare("billing", database_url="")  # SQLite: the dev PostgreSQL lives in the cluster
    mesh.prepare("moderation")
    mesh.prepare(
        "gateway",
        billing_addr=mesh.address("billing", "grpc"),
        moderation_addr=mesh.address("moderation", "grpc"),
    )
    mesh.prepare("render", relay=mesh.address("gateway", "relay"), data_dir=str(RENDER_CACHE))
    errors: list[BaseException] = []

    def start(service: str) -> None:
        try:
            if service == "render":  # its node token comes from the live billing
                billing_started.wait(START_TIMEOUT)
                with grpc.insecure_channel(mesh.address("billing", "grpc")) as channel:
                    stub = billing_pb2_grpc.BillingServiceStub(channel)
                    request = billing_pb2.CreateNodeTokenRequest(name="deploy-test")
                    token = stub.CreateNodeToken(request, timeout=30, wait_for_ready=True).token
                mesh.start(service, token=token)
            else:
                mesh.start(service)
                if service == "billing":
                    billing_started.set()
        except BaseException as exc:  # re-raised below, in the fixture's thread
            errors.append(exc)
            billing_started.set()

    billing_started = threading.Event()
    threads = [threading.Thread(target=start, args=(s,)) for s in k8s.SERVICES]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        yield mesh
    finally:
        mesh.stop()


def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return int(reply.status)


@pytest.mark.parametrize("service", [pytest.param(s, id=s) for s in k8s.SERVICES])
def test_the_ports_the_manifests_name_are_opened_by_their_settings(
    live: Live, rendered: dict[str, list[Any]], service: str
) -> None:
    spec = k8s.SERVICES[service]
    proc = live.procs[service]
    assert proc.alive()
    announced = " ".join(str(v) for v in proc.ready.values())
    (manifest,) = [c for _, c, s in k8s.talos_containers(rendered["dev"]) if s == service]
    for port in spec.declared_ports(manifest):
        number = live.ports[service][port.name]
        if port.protocol == "grpc":
            assert health_status(number) == health_pb2.HealthCheckResponse.SERVING, port.name
        if port.name == spec.metrics_port:
            with urllib.request.urlopen(f"http://127.0.0.1:{number}/metrics", timeout=10) as reply:
                assert reply.status == 200
                assert b"# TYPE" in reply.read()
        if port.protocol == "grpc" and service != "render":
            assert f":{number}" in announced, f"{port.name} {number} not in the ready line {proc.ready}"


def http_status(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return int(reply.status)


def test_every_probe_of_the_dev_overlay_answers_serving(live: Live, rendered: dict[str, list[Any]]) -> None:
    """Translate each container's probe ports to the live processes and ask them, as a kubelet would."""
    asked = 0
    for _, container, service in k8s.talos_containers(rendered["dev"]):
        spec = k8s.SERVICES[service]
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[probe_name]
            declared = k8s.resolve_port(container, (probe.get("grpc") or probe["httpGet"])["port"])
            assert declared is not None
            (port,) = [p for p in spec.ports if p.name == declared["name"]]
            if "grpc" in probe:
                assert health_status(live.ports[service][port.name]) == health_pb2.HealthCheckResponse.SERVING
            else:
                assert http_status(live.ports[service][port.name], probe["httpGet"]["path"]) == 200
            asked += 1
    assert asked == 3 * len(k8s.SERVICES)


@pytest.mark.parametrize(
    "service", [pytest.param(s, id=s) for s in k8s.SERVICES if k8s.SERVICES[s].health_paths]
)
def test_the_health_paths_an_http_probe_may_ask_answer(live: Live, service: str) -> None:
    """The paths the prod overlay's HTTP probes may ask (where a gRPC probe cannot speak TLS)."""
    spec = k8s.SERVICES[service]
    (http,) = [p for p in spec.ports if p.protocol == "http"]
    for path in spec.health_paths:
        assert http_status(live.ports[service][http.name], path) == 200, path


def test_the_render_node_joins_the_gateway_s_relay(live: Live) -> None:
    """With the overlay's settings a node authenticates and registers with the relay."""
    import json
    import time

    url = f"http://127.0.0.1:{live.ports['gateway']['http']}/readyz"
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # 503 while not ready: the body still counts nodes
            body = json.loads(exc.read())
        if body.get("nodes_connected", 0) >= 1:
            break
        time.sleep(0.2)
    assert body.get("nodes_connected", 0) >= 1, body


def metric_families(port: int) -> set[str]:
    """Every sample name a /metrics endpoint can expose (counters also with their _total)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "counter":
                names.add(f"{name}_total")
    return names


def test_the_metrics_the_operator_guide_names_exist(live: Live) -> None:
    exposed = metric_families(live.ports["gateway"]["http"]) | metric_families(
        live.ports["render"]["metrics"]
    )
    guide = (k8s.REPO / "docs" / "operations.md").read_text()
    named = set(re.findall(r"\b(talos_(?:gateway|relay|render)_[a-z_]+)", guide))
    assert len(named) >= 20
    assert named <= exposed, sorted(named - exposed)
