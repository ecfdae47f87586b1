"""The prod gateways form one relay network: a Redis that keeps nothing on disk and admits the
gateway alone, each replica named after its pod and fetched from at its pod IP on the peer port,
gateway -> gateway on that port only. Dev stays one gateway with neither.

The Redis command is also run for real (this machine's ``redis-server``): what it is given must
leave nothing behind when the kubelet stops it, and its readiness probe must answer."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import k8s, netpol, podenv
from tests.deploy.netpol import Endpoint

Doc = dict[str, Any]
INTERNET = Endpoint(None)
ELSEWHERE = Endpoint({"app": "anything"}, {"kubernetes.io/metadata.name": "other"})


def _redis(docs: list[Doc]) -> tuple[Doc, Doc, Doc]:
    """The Redis workload, its container and the Service the gateway's TALOS_GATEWAY_REDIS_URL names."""
    url = k8s.service_settings(docs, "gateway").redis_url
    assert url.startswith("redis://"), url
    host, _, rest = url.removeprefix("redis://").partition(":")
    port = int(rest.split("/", 1)[0])
    service = k8s.named(docs, "Service", host)
    (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    (workload,) = [
        w for w in k8s.workloads(docs) if k8s.selects(service["spec"]["selector"], k8s.pod_labels(w))
    ]
    (container,) = k8s.pod_spec(workload)["containers"]
    assert k8s.resolve_port(container, svc_port["targetPort"]) is not None
    return workload, container, service


def options(command: list[str]) -> dict[str, str]:
    """``redis-server --name value ...`` as a mapping; a config file argument is refused."""
    assert command[0] == "redis-server" and len(command) % 2 == 1, command
    pairs = dict(zip(command[1::2], command[2::2], strict=True))
    assert all(name.startswith("--") for name in pairs), f"a config file or stray argument: {command}"
    return pairs


def persistence_problems(workload: Doc) -> list[str]:
    """Why this Redis could write what it holds somewhere that outlives the pod (empty: it cannot)."""
    problems = []
    if workload["kind"] != "Deployment" or workload["spec"].get("volumeClaimTemplates"):
        problems.append(f"a {workload['kind']} with claims: Redis here keeps nothing")
    for volume in k8s.pod_spec(workload).get("volumes", []):
        if set(volume) != {"name", "emptyDir"}:
            problems.append(f"volume {volume['name']} is not an emptyDir")
    (container,) = k8s.pod_spec(workload)["containers"]
    given = options(container.get("command", []) + container.get("args", []))
    if given.get("--save") != "":
        problems.append(f'--save is {given.get("--save")!r}, not "" (no snapshots)')
    if given.get("--appendonly") != "no":
        problems.append(f"--appendonly is {given.get('--appendonly')!r}, not no (no append-only file)")
    return problems


# -- Redis: nothing on disk, the gateway alone ------------------------------------------------
def test_prod_redis_keeps_nothing_and_is_hardened(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    workload, container, _ = _redis(docs)
    assert persistence_problems(workload) == []
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    pod_security = k8s.pod_spec(workload)["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert {"readinessProbe", "livenessProbe"} <= set(container)
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    # Redis refuses writes before the kubelet would kill it for memory.
    maxmemory = options(container["command"])["--maxmemory"]
    limit = container["resources"]["limits"]["memory"]
    assert int(maxmemory.removesuffix("mb")) * 1_000_000 < int(limit.removesuffix("Mi")) * 2**20


def test_the_persistence_check_sees_snapshots_an_append_only_file_and_a_claim(
    rendered: dict[str, list[Doc]],
) -> None:
    workload, container, _ = _redis(copy.deepcopy(rendered["prod"]))
    command = container["command"]
    command[command.index("--appendonly") + 1] = "yes"
    assert any("--appendonly" in p for p in persistence_problems(workload))
    command[command.index("--appendonly") + 1] = "no"
    del command[command.index("--save") : command.index("--save") + 2]
    assert any("--save" in p for p in persistence_problems(workload))
    k8s.pod_spec(workload)["volumes"][0] = {"name": "data", "persistentVolumeClaim": {"claimName": "x"}}
    assert any("not an emptyDir" in p for p in persistence_problems(workload))


def test_only_the_gateway_reaches_redis_and_redis_reaches_nothing(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    workload, container, _ = _redis(docs)
    redis = Endpoint(k8s.pod_labels(workload))
    port = int(options(container["command"])["--port"])
    pods = {w["metadata"]["name"]: Endpoint(k8s.pod_labels(w)) for w in k8s.workloads(docs)}
    gateway = pods["talos-gateway"]
    assert netpol.allowed(docs, gateway, redis, port)
    for name, other in [*pods.items(), ("internet", INTERNET), ("elsewhere", ELSEWHERE)]:
        if other is not gateway and other is not redis:
            assert not netpol.allowed(docs, other, redis, port), name
    for destination, to_port in ((INTERNET, 443), (gateway, 50052), (ELSEWHERE, port)):
        assert not netpol.allowed(docs, redis, destination, to_port)


# -- each replica: its name, its address, the peer port ---------------------------------------
def test_each_gateway_replica_is_named_after_its_pod_and_advertises_its_pod_ip(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["prod"]
    _, container = k8s.service_container(docs, "gateway")
    env = podenv.container_environment(container, docs, {})
    settings = k8s.service_settings(docs, "gateway")
    pod_ip = podenv.DOWNWARD_SAMPLES["status.podIP"]
    assert settings.peer_advertise == f"{pod_ip}:{settings.peer_port}"
    assert settings.replica_id == podenv.DOWNWARD_SAMPLES["metadata.name"]
    assert env.downward["TALOS_GATEWAY_REPLICA_ID"] == "metadata.name"
    assert "status.podIP" in env.downward.values()
    peer = k8s.resolve_port(container, "peer")
    assert peer is not None and peer["containerPort"] == settings.peer_port


def test_an_advertised_address_that_refers_to_nothing_is_caught(rendered: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(rendered["prod"])
    _, container = k8s.service_container(docs, "gateway")
    config = k8s.named(docs, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])
    del config["data"]["TALOS_GATEWAY_PEER_PORT"]  # the kubelet would leave $(...) as written
    env = podenv.container_environment(container, docs, {})
    assert any("TALOS_GATEWAY_PEER_ADVERTISE: $(TALOS_GATEWAY_PEER_PORT)" in p for p in env.problems)
    assert podenv.expand("$$(POD_IP) $(POD_IP)", {"POD_IP": "10.0.0.1"}) == ("$(POD_IP) 10.0.0.1", [])


def test_gateways_reach_each_other_on_the_peer_port_only(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    peer_port = k8s.service_settings(docs, "gateway").peer_port
    pods = {w["metadata"]["name"]: Endpoint(k8s.pod_labels(w)) for w in k8s.workloads(docs)}
    gateway = pods.pop("talos-gateway")
    assert netpol.allowed(docs, gateway, gateway, peer_port)
    for port in (8080, 50051, 50052):
        assert not netpol.allowed(docs, gateway, gateway, port), port
    for name, other in [*pods.items(), ("internet", INTERNET), ("elsewhere", ELSEWHERE)]:
        assert not netpol.allowed(docs, other, gateway, peer_port), name


def test_dev_is_one_gateway_without_redis_or_peers(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    settings = k8s.service_settings(docs, "gateway")
    assert settings.redis_url == ""
    _, container = k8s.service_container(docs, "gateway")
    assert k8s.resolve_port(container, "peer") is None
    assert not podenv.container_environment(container, docs, {}).downward
    assert not any("redis" in w["metadata"]["name"] for w in k8s.workloads(docs))
    assert k8s.named(docs, "Deployment", "talos-gateway")["spec"].get("replicas", 1) == 1


# -- the Redis command, run --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_redis(tmp_path: Path) -> Iterator[Any]:
    """Starts redis-server with a command's options, on a free loopback port and a folder of its own."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is missing; .ci/run installs it")
        pytest.skip("redis-server is not installed here")
    started: list[subprocess.Popen[str]] = []

    def run(command: list[str], folder: Path) -> tuple[subprocess.Popen[str], int]:
        given = options(command)
        port = _free_port()
        given.update({"--port": str(port), "--dir": str(folder), "--bind": "127.0.0.1"})
        folder.mkdir()
        argv = [binary, *(x for pair in given.items() for x in pair)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        assert proc.stdout is not None
        for line in proc.stdout:  # the line Redis logs once it accepts connections
            if "Ready to accept connections" in line:
                return proc, port
        raise AssertionError(f"redis-server exited ({proc.wait()}) before it was ready")

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _fill_and_stop(proc: subprocess.Popen[str], port: int) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    for i in range(100):
        client.set(f"talos:relay:t:{i}", "job-id")
    client.close()
    proc.terminate()  # SIGTERM, as the kubelet stops a pod
    assert proc.wait(timeout=30) == 0


def test_the_manifest_s_redis_writes_nothing_when_stopped(
    rendered: dict[str, list[Doc]], run_redis: Any, tmp_path: Path
) -> None:
    _, container, _ = _redis(rendered["prod"])
    proc, port = run_redis(container["command"], tmp_path / "manifest")
    probe = container["readinessProbe"]["exec"]["command"]
    probe = [str(port) if arg == options(container["command"])["--port"] else arg for arg in probe]
    answer = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    assert answer.returncode == 0 and answer.stdout.strip() == "PONG", answer
    _fill_and_stop(proc, port)
    assert os.listdir(tmp_path / "manifest") == []

    # The same without its "no persistence" options: Redis saves a snapshot when stopped.
    command = list(container["command"])
    del command[command.index("--save") : command.index("--save") + 2]
    proc, port = run_redis(command, tmp_path / "default")
    _fill_and_stop(proc, port)
    assert os.listdir(tmp_path / "default") == ["dump.rdb"]
