"""The images `make images` builds, run as the cluster runs them, generate one image end to end.

Run by ``make container-smoke`` (CI runs it after ``make test``), which builds the images first
and sets CONTAINER_SMOKE=1; elsewhere the tests that need the running images are skipped, and
only the checks of the ``docker run`` flags themselves run.

The mesh, on one Docker network with the dev overlay's settings and flags (tests/deploy/containers.py):
moderation, the gateway (also named talos-relay, as the headless Service names it) and the CPU
render node, each with a read-only root, uid 10001, no capabilities and a tmpfs per emptyDir.
Billing keeps its books in this machine's PostgreSQL (127.0.0.1:5432, trust authentication, in a
schema of its own that is dropped afterwards). That server listens on loopback only, so billing
runs on the host's network, listening only on the host's address on the Docker network (port 0:
the one it announces), which is where the gateway reaches it; that address is its one change
from the overlay, besides the database.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy import containers, images, k8s
from tests.deploy.containers import Container

Doc = dict[str, Any]
SMOKE = os.environ.get("CONTAINER_SMOKE") == "1"
POSTGRES_URL = os.environ.get("TALOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA_PREFIX = "talos_smoke_"
START_TIMEOUT = 180.0
# Building the built-in test model and warming it up on a CPU, inside the dev limits.
RENDER_START_TIMEOUT = 600.0
PROMPT = "a lighthouse at dusk"


def _dev(docs: list[Doc], service: str) -> tuple[Doc, Doc]:
    for workload, container, svc in k8s.talos_containers(docs):
        if svc == service:
            return workload, container
    raise KeyError(service)


def _port(container: Doc, name: str) -> int:
    declared = k8s.resolve_port(container, name)
    assert declared is not None, name
    return int(declared["containerPort"])


# -- the docker run flags (no container engine needed) ---------------------------------------
@pytest.mark.parametrize("service", list(k8s.SERVICES))
def test_each_container_runs_with_the_dev_overlay_s_restrictions(
    rendered: dict[str, list[Doc]], service: str
) -> None:
    docs = rendered["dev"]
    workload, container = _dev(docs, service)
    spec = containers.run_spec(docs, workload, container, f"talos-{service}", container["image"])
    args = spec.args({containers.LABEL: "x"})
    assert spec.user == "10001:10001"
    assert "--read-only" in args and args[args.index("--cap-drop") + 1] == "ALL"
    assert "no-new-privileges" in args
    assert any(a.startswith("/tmp:") for a in args), "a writable /tmp, as the emptyDir gives"
    assert spec.cpus and spec.memory_bytes
    entry = args.index("--entrypoint")  # then the entry point, the image, and the arguments
    assert [args[entry + 1], *args[entry + 3 :]] == container["command"]
    assert args[entry + 2] == container["image"]
    service_names = containers.aliases(docs, workload)
    assert f"talos-{service}" in service_names or service == "render"


def test_the_overlay_addresses_resolve_through_the_aliases(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    gateway, _ = _dev(docs, "gateway")
    moderation, _ = _dev(docs, "moderation")
    assert {"talos-gateway", "talos-relay"} <= set(containers.aliases(docs, gateway))
    assert containers.aliases(docs, moderation) == ["talos-moderation"]


def test_a_render_token_stays_off_the_command_line(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    workload, container = _dev(docs, "render")
    spec = containers.run_spec(docs, workload, container, "render", "talos-render:dev")
    spec.secret_env["TALOS_RENDER_TOKEN"] = "not-a-real-token-value"
    args = spec.args({})
    assert "TALOS_RENDER_TOKEN" in args and not any("not-a-real-token-value" in a for a in args)


# -- the running mesh -----------------------------------------------------------------------------
@dataclass
class Mesh:
    network: str
    billing: Container
    moderation: Container
    gateway: Container
    render: Container
    billing_addr: str
    schema: str
    docs: list[Doc]

    @property
    def all(self) -> list[Container]:
        return [self.billing, self.moderation, self.gateway, self.render]

    def http(self) -> str:
        _, container = _dev(self.docs, "gateway")
        return f"http://{self.gateway.ip(self.network)}:{_port(container, 'http')}"

    def admin(self, *argv: str) -> dict[str, Any]:
        return talos_admin(self.billing, self.billing_addr, *argv)


def talos_admin(billing: Container, address: str, *argv: str) -> dict[str, Any]:
    """talos-admin inside the billing container, as the operations guide runs it."""
    done = billing.exec("talos-admin", "--addr", address, *argv)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _postgres(sql: str, *args: Any) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def _drop_schemas(pattern: str) -> None:
    names = _postgres("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", pattern)
    for (name,) in names:
        _postgres(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _remove_leftovers() -> None:
    """Containers and networks an interrupted smoke run left behind (they carry our label)."""
    label = f"label={containers.LABEL}"
    for kind, list_flags, remove_flags in (("container", ["-aq"], ["--force"]), ("network", ["-q"], [])):
        listed = containers.docker(kind, "ls", *list_flags, "--filter", label).stdout.split()
        if listed:
            containers.docker(kind, "rm", *remove_flags, *listed, check=False)
    _drop_schemas(SCHEMA_PREFIX + "%")


def _readyz(base: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as reply:
            return dict(json.loads(reply.read()))
    except urllib.error.HTTPError as exc:  # 503 while not ready: the body still tells
        return dict(json.loads(exc.read()))


@pytest.fixture(scope="module")
def mesh(rendered: dict[str, list[Doc]]) -> Iterator[Mesh]:
    if not SMOKE:
        pytest.skip("runs under `make container-smoke` (it builds the images and sets CONTAINER_SMOKE=1)")
    assert containers.engine_running(), "no Docker engine answers `docker info`"
    docs = rendered["dev"]
    run = uuid.uuid4().hex[:8]
    labels = {containers.LABEL: run}
    network = f"talos-smoke-{run}"
    schema = SCHEMA_PREFIX + run
    _remove_leftovers()
    containers.docker("network", "create", "--label", f"{containers.LABEL}={run}", network)
    host_address = containers.network_gateway(network)
    started: list[Container] = []

    def container(service: str, **env: str) -> Container:
        workload, manifest = _dev(docs, service)
        spec = containers.run_spec(docs, workload, manifest, f"talos-{service}-{run}", manifest["image"])
        spec.network = network
        spec.env.update(env)
        made = Container(spec, labels)
        started.append(made)
        return made

    try:
        billing = container(
            "billing",
            TALOS_BILLING_HOST=host_address,
            TALOS_BILLING_PORT="0",
            TALOS_BILLING_DATABASE_SCHEMA=schema,
        )
        billing.spec.network = "host"
        del billing.spec.env["TALOS_BILLING_DATABASE_URL"]  # the overlay's own PostgreSQL
        billing.spec.secret_env["TALOS_BILLING_DATABASE_URL"] = POSTGRES_URL  # as from a Secret
        moderation = container("moderation")
        billing.start()
        moderation.start()
        billing_addr = str(billing.wait_ready(START_TIMEOUT)["grpc"])
        gateway = container("gateway", TALOS_GATEWAY_BILLING_ADDR=billing_addr).start()
        moderation.wait_ready(START_TIMEOUT)
        gateway.wait_ready(START_TIMEOUT)
        token = talos_admin(billing, billing_addr, "create-node-token", "--name", f"smoke-{run}")["token"]
        render = container("render")
        render.spec.secret_env["TALOS_RENDER_TOKEN"] = token
        render.start().wait_ready(RENDER_START_TIMEOUT)
        mesh = Mesh(network, billing, moderation, gateway, render, billing_addr, schema, docs)
        base = mesh.http()
        deadline = time.monotonic() + START_TIMEOUT
        while _readyz(base).get("nodes_connected", 0) < 1:  # the kubelet's readiness probe, too, polls
            assert time.monotonic() < deadline, f"no node joined the relay\n{render.logs()}\n{gateway.logs()}"
            time.sleep(0.25)
        yield mesh
    finally:
        for made in reversed(started):  # render first, billing last
            made.remove()
        containers.docker("network", "rm", network, check=False)
        _drop_schemas(schema)


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return int(reply.status)


def test_each_container_runs_read_only_as_uid_10001_without_capabilities(mesh: Mesh) -> None:
    for made in mesh.all:
        host = made.inspect()["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], made.name
        assert "no-new-privileges" in host["SecurityOpt"], made.name
        ids = made.exec("python", "-c", "import os; print(os.getuid(), os.getgid())")
        assert ids.stdout.split() == ["10001", "10001"], made.name
        status = made.exec("python", "-c", "print(open('/proc/1/status').read())").stdout
        effective = [line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")]
        assert effective == ["0000000000000000"], f"{made.name}: capabilities {effective}"
        write = made.exec("python", "-c", "open('/opt/talos/written', 'w')")
        assert write.returncode != 0 and "Read-only file system" in write.stderr, made.name


def test_each_service_answers_its_health_check(mesh: Mesh) -> None:
    assert _health(mesh.billing_addr) == health_pb2.HealthCheckResponse.SERVING
    asked = 1
    for made, service in (
        (mesh.moderation, "moderation"),
        (mesh.gateway, "gateway"),
        (mesh.render, "render"),
    ):
        _, manifest = _dev(mesh.docs, service)
        spec = k8s.SERVICES[service]
        for port in spec.declared_ports(manifest):
            address = f"{made.ip(mesh.network)}:{_port(manifest, port.name)}"
            if port.protocol == "grpc":
                assert _health(address) == health_pb2.HealthCheckResponse.SERVING, (service, port.name)
                asked += 1
            if port.name == spec.metrics_port:
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
                    assert reply.status == 200 and b"# TYPE" in reply.read()
    assert asked == 1 + sum(
        p.protocol == "grpc"
        for s in ("moderation", "gateway", "render")
        for p in k8s.SERVICES[s].declared_ports(_dev(mesh.docs, s)[1])
    )


def _request(url: str, key: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=300) as reply:
        assert reply.status == 200
        return dict(json.loads(reply.read()))


def test_one_image_generated_end_to_end_is_charged_the_price(mesh: Mesh) -> None:
    from PIL import Image

    from talos_billing.config import Settings

    created = mesh.admin("create-account", "--credits", "1000")
    before = mesh.admin("account", created["account_id"])
    price = before["price_per_image"]
    assert price == Settings().price == 18, "the dev overlay keeps the flat price"
    assert before["balance"] == 1000 and before["allowance_remaining"] == 0

    base = mesh.http()
    size = "1024x1024"
    reply = _request(
        f"{base}/v1/images/generations", created["api_key"], {"prompt": PROMPT, "steps": 2, "size": size}
    )
    (result,) = reply["data"]
    picture = Image.open(io.BytesIO(base64.b64decode(result["b64_json"])))
    picture.load()
    assert picture.format == "PNG" and f"{picture.width}x{picture.height}" == size
    assert reply["credits_charged"] == price

    after = mesh.admin("account", created["account_id"])
    assert before["balance"] - after["balance"] == price
    assert _request(f"{base}/v1/account", created["api_key"])["balance"] == after["balance"]


def test_billing_keeps_its_books_in_the_machine_s_postgresql(mesh: Mesh) -> None:
    tables = _postgres(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", mesh.schema
    )
    assert tables, f"billing created no table in {mesh.schema}"
    host = mesh.billing.inspect()["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert mesh.billing_addr.startswith(containers.network_gateway(mesh.network) + ":")


# -- the built images themselves ---------------------------------------------------------------
@pytest.fixture(scope="module")
def built() -> list[images.BuiltImage]:
    if not SMOKE:
        pytest.skip("runs under `make container-smoke` (it builds the images and sets CONTAINER_SMOKE=1)")
    return images.built_images()


def test_every_image_runs_as_the_user_the_manifests_name(
    built: list[images.BuiltImage], rendered: dict[str, list[Doc]]
) -> None:
    for image in built:
        workload, _ = _dev(rendered["dev"], image.service)
        security = k8s.pod_spec(workload)["securityContext"]
        assert containers.image_user(image.ref) == f"{security['runAsUser']}:{security['runAsGroup']}"


def test_no_image_carries_the_development_supervisor(built: list[images.BuiltImage]) -> None:
    module = images.supervisor_module()
    distribution = images.supervisor_package().distribution
    # Prints what it finds of the supervisor: its module, or the distribution that ships it.
    probe = f"""
import importlib.metadata, importlib.util
found = []
try:
    if importlib.util.find_spec({module!r}):
        found.append({module!r})
except ModuleNotFoundError:
    pass
try:
    importlib.metadata.distribution({distribution!r})
    found.append({distribution!r})
except importlib.metadata.PackageNotFoundError:
    pass
print(" ".join(found))
"""
    carried = {}
    for image in built:
        done = containers.docker(
            *("run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL"),
            *("--entrypoint", "python", image.ref, "-c", probe),
        )
        if done.stdout.strip():
            carried[image.ref] = done.stdout.strip()
    assert not carried, f"the development supervisor is in: {carried}"
