"""The overlays apply where operators run them: every kubectl the guide supports renders them
alike, every quantity is a string (as a real API server wants under server-side apply), the dev
overlay fits one small node beside the cluster's own pods, and dev billing waits for its database
instead of crash-looping."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy import k8s, kubectl, sizing

Doc = dict[str, Any]
IN_CI = os.environ.get("CI", "").lower() == "true"
DEV_NODE = sizing.DEV_NODE
SYSTEM_MARGIN = sizing.SYSTEM_MARGIN
POSTGRES_URL = os.environ.get("TALOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# -- every supported kubectl -------------------------------------------------------------------
def test_the_oldest_kubectl_is_the_oldest_kubernetes_the_guide_supports() -> None:
    assert k8s.KUBERNETES_VERSION.rsplit(".", 1)[0] == kubectl.OLDEST
    assert kubectl.client_version(kubectl.OLDEST).startswith(f"v{kubectl.OLDEST}.")
    guide = (k8s.REPO / "docs" / "operations.md").read_text()
    assert f"Kubernetes **{kubectl.OLDEST} or newer**" in guide


@pytest.mark.parametrize("version", [v for v in kubectl.VERSIONS if v != kubectl.OLDEST])
def test_every_supported_kubectl_renders_every_overlay_as_the_oldest_does(
    rendered: dict[str, list[Doc]], version: str
) -> None:
    if version in kubectl.RELEASES:
        assert kubectl.client_version(version) == kubectl.RELEASES[version].kubectl
    command = kubectl.kustomize_command(version)
    for overlay in k8s.OVERLAYS:
        assert k8s.build(k8s.K8S / "overlays" / overlay, command) == rendered[overlay], overlay


def test_the_oldest_kustomize_refuses_a_patch_file_of_several_objects(tmp_path: Any) -> None:
    """Why every patch file holds one object: kubectl 1.30 cannot apply the other kind."""
    patch = tmp_path / "patch.yaml"
    patch.write_text(
        "\n---\n".join(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\ndata:\n  a: b" for n in "xy"
        )
    )
    (tmp_path / "objects.yaml").write_text(
        "\n---\n".join(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}" for n in "xy")
    )
    kustomization = "resources: [objects.yaml]\npatches:\n  - path: patch.yaml\n"
    (tmp_path / "kustomization.yaml").write_text(kustomization)
    with pytest.raises(RuntimeError, match="unable to parse SM or JSON patch"):
        k8s.build(tmp_path, kubectl.kustomize_command(kubectl.OLDEST))
    assert len(k8s.build(tmp_path, kubectl.kustomize_command(kubectl.CURRENT))) == 2


def test_every_patch_file_holds_one_object() -> None:
    for path in sorted(k8s.K8S.glob("overlays/*/patches/*.yaml")):
        objects = [part for part in path.read_text().split("\n---") if "kind:" in part]
        assert len(objects) == 1, path


# -- quantities --------------------------------------------------------------------------------
def quantity_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for where, value in sizing.quantities(docs):
        if not isinstance(value, str):
            problems.append(f"{where}: {value!r} is not a string")
        else:
            try:
                sizing.quantity(value)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
    return problems


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_quantity_is_a_string(rendered: dict[str, list[Doc]], overlay: str) -> None:
    assert len(sizing.quantities(rendered[overlay])) >= 20
    problems = quantity_problems(rendered[overlay])
    assert not problems, "\n".join(problems)


def test_an_integer_quantity_is_caught(rendered: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(rendered["prod"])
    render = k8s.named(docs, "Deployment", "talos-render")
    assert k8s.containers(render)[0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    k8s.containers(render)[0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert any("nvidia.com/gpu: 1 is not a string" in p for p in quantity_problems(docs))


# -- the dev overlay on one small node -------------------------------------------------------
def test_the_dev_overlay_fits_one_small_node_beside_the_cluster_s_own_pods(
    rendered: dict[str, list[Doc]],
) -> None:
    asked = sizing.total_requests(rendered["dev"])
    room = DEV_NODE - SYSTEM_MARGIN
    assert asked.fits(room), f"the dev overlay asks for {asked}; a {DEV_NODE} node leaves {room}"
    for workload in k8s.workloads(rendered["dev"]):
        for container in k8s.containers(workload):
            limits = container["resources"]["limits"]
            limit = sizing.Resources.of(limits["cpu"], limits["memory"])
            assert limit.fits(DEV_NODE), f"{container['name']}: a limit of {limit} exceeds the node"


def test_the_sizing_sees_requests_init_containers_and_replicas(rendered: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(rendered["dev"])
    before = sizing.total_requests(docs)
    billing = k8s.named(docs, "Deployment", "talos-billing")
    running = sizing.pod_requests(billing)
    init = k8s.pod_spec(billing)["initContainers"][0]
    asked_by_init = init["resources"]["requests"]["cpu"]
    init["resources"]["requests"]["cpu"] = "2"  # an init container bigger than the pod's containers
    assert sizing.pod_requests(billing).cpu == 2
    assert sizing.total_requests(docs).cpu == before.cpu - running.cpu + 2
    init["resources"]["requests"]["cpu"] = asked_by_init
    moderation = k8s.named(docs, "Deployment", "talos-moderation")
    moderation["spec"]["replicas"] = 3
    assert sizing.total_requests(docs).cpu == before.cpu + 2 * sizing.pod_requests(moderation).cpu
    k8s.containers(moderation)[0]["resources"]["requests"]["cpu"] = "1"
    assert not sizing.total_requests(docs).fits(DEV_NODE - SYSTEM_MARGIN)


# -- dev billing waits for its database ------------------------------------------------------
def _wait_for_postgres(docs: list[Doc]) -> Doc:
    billing = k8s.named(docs, "Deployment", "talos-billing")
    (init,) = k8s.pod_spec(billing).get("initContainers", [])
    return init


def test_dev_billing_waits_for_the_database_its_settings_name(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    init = _wait_for_postgres(docs)
    (url,) = [e for e in init["env"] if e["name"] == "DATABASE_URL"]
    ref = url["valueFrom"]["configMapKeyRef"]
    billing = k8s.named(docs, "Deployment", "talos-billing")
    (billing_container,) = k8s.pod_spec(billing)["containers"]
    assert {"configMapRef": {"name": ref["name"]}} in billing_container["envFrom"]
    assert ref["key"] == k8s.SERVICES["billing"].prefix() + "DATABASE_URL"
    postgres = k8s.named(docs, "StatefulSet", "talos-postgres")
    assert init["image"] == k8s.pod_spec(postgres)["containers"][0]["image"], "one image for the dev database"
    assert not k8s.of_kind(rendered["prod"], "StatefulSet")
    assert "initContainers" not in k8s.pod_spec(k8s.named(rendered["prod"], "Deployment", "talos-billing"))


def _pg_isready() -> str:
    found = shutil.which("pg_isready")
    if found is None:
        if IN_CI:
            pytest.fail("pg_isready is missing (postgresql-client); .ci/run installs it")
        pytest.skip("pg_isready (postgresql-client) is not installed")
    return found


@pytest.fixture
def wait_script(rendered: dict[str, list[Doc]]) -> Iterator[Any]:
    """Runs the init container's own command here, with a database URL of the test's choosing."""
    init = _wait_for_postgres(rendered["dev"])
    _pg_isready()
    started: list[subprocess.Popen[str]] = []

    def run(url: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            init["command"],
            env={"PATH": os.environ["PATH"], "DATABASE_URL": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_the_wait_ends_once_the_database_answers(wait_script: Any) -> None:
    host_part = POSTGRES_URL.split("://", 1)[1]
    proc = wait_script(f"postgresql+asyncpg://{host_part}")
    assert proc.wait(timeout=60) == 0, proc.stdout.read() if proc.stdout else ""


def test_the_wait_goes_on_while_the_name_does_not_resolve(wait_script: Any) -> None:
    proc = wait_script("postgresql+asyncpg://talos@talos-postgres.invalid:5432/talos")
    assert proc.stdout is not None
    for _ in range(2):  # a second attempt: it retried instead of exiting
        line = proc.stdout.readline()
        assert line.startswith("waiting for PostgreSQL at talos-postgres.invalid:5432"), line
    assert proc.poll() is None
