"""Running the built images the way the cluster runs them, through the Docker CLI.

Every ``docker run`` flag that matters comes from the dev overlay's rendering of the container:
the user and group, a read-only root, no capabilities, no privilege escalation, a tmpfs of the
declared size for each emptyDir (``/dev/shm`` for a memory one), the CPU and memory limits, the
command, the settings (ConfigMaps and literal env; Secret values are handed over through the
Docker CLI's environment, never its argument list), and the Service names that select the pod
as network aliases, so the overlay's addresses (``talos-moderation:50062``, ``talos-relay:50052``)
resolve unchanged on the Docker network.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.deploy import k8s, podenv, sizing

Doc = dict[str, Any]
# Every container and network a smoke run makes carries this label (value: the run's id).
LABEL = "org.talos.smoke"
# What talos_common.server.announce_ready prints once a service listens.
READY_PREFIX = "TALOS_READY "


def docker(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({done.returncode}):\n{done.stderr}")
    return done


@dataclass
class RunSpec:
    name: str
    image: str
    command: list[str]
    user: str
    env: dict[str, str]
    secret_env: dict[str, str] = field(default_factory=dict)
    read_only: bool = False
    cap_drop: list[str] = field(default_factory=list)
    no_new_privileges: bool = False
    tmpfs: dict[str, int] = field(default_factory=dict)  # mount path -> size in bytes
    fs_group: str | None = None  # the group that owns each tmpfs (the pod's fsGroup)
    shm_bytes: int | None = None
    cpus: str | None = None
    memory_bytes: int | None = None
    aliases: list[str] = field(default_factory=list)
    network: str = "bridge"

    def args(self, labels: Mapping[str, str]) -> list[str]:
        """``docker run`` arguments (without ``run``); secrets are named, their values are not."""
        out = ["--detach", "--name", self.name, "--network", self.network, "--user", self.user]
        for key, value in labels.items():
            out += ["--label", f"{key}={value}"]
        if self.network not in ("host", "none"):
            for alias in self.aliases:
                out += ["--network-alias", alias]
        if self.read_only:
            out.append("--read-only")
        for capability in self.cap_drop:
            out += ["--cap-drop", capability]
        if self.no_new_privileges:
            out += ["--security-opt", "no-new-privileges"]
        uid = self.user.split(":")[0]
        gid = self.fs_group or self.user.split(":")[-1]
        for path, size in sorted(self.tmpfs.items()):
            # Owned by the pod's user and fsGroup, as the kubelet hands an emptyDir over (Docker
            # ignores a mode= here when the image has the folder).
            out += ["--tmpfs", f"{path}:rw,nosuid,nodev,noexec,size={size},uid={uid},gid={gid}"]
        if self.shm_bytes is not None:
            out += ["--shm-size", str(self.shm_bytes)]
        if self.cpus is not None:
            out += ["--cpus", self.cpus]
        if self.memory_bytes is not None:
            out += ["--memory", str(self.memory_bytes)]
        for key, value in sorted(self.env.items()):
            out += ["--env", f"{key}={value}"]
        for key in sorted(self.secret_env):
            out += ["--env", key]  # the value comes from the docker CLI's own environment
        return [*out, "--entrypoint", self.command[0], self.image, *self.command[1:]]


def aliases(docs: list[Doc], workload: Doc) -> list[str]:
    """The names of the Services that select the workload's pods (what cluster DNS resolves)."""
    labels = k8s.pod_labels(workload)
    return sorted(
        s["metadata"]["name"]
        for s in k8s.of_kind(docs, "Service")
        if s["spec"].get("selector") and k8s.selects(s["spec"]["selector"], labels)
    )


def run_spec(docs: list[Doc], workload: Doc, container: Doc, name: str, image: str) -> RunSpec:
    """How the dev overlay's pod would run this container, as ``docker run`` can say it."""
    pod = k8s.pod_spec(workload)
    pod_sc = pod.get("securityContext", {})
    sc = {**pod_sc, **container.get("securityContext", {})}
    env = podenv.container_environment(container, docs, {})
    assert not env.problems, env.problems
    assert not env.downward, f"{name}: no docker run flag gives a pod's own fields {sorted(env.downward)}"
    spec = RunSpec(
        name=name,
        image=image,
        command=list(container["command"]),
        user=f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}",
        env={k: v for k, v in env.values.items() if k not in env.secret},
        read_only=sc.get("readOnlyRootFilesystem") is True,
        cap_drop=list(sc.get("capabilities", {}).get("drop", [])),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        aliases=aliases(docs, workload),
        fs_group=str(pod_sc["fsGroup"]) if "fsGroup" in pod_sc else None,
    )
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        empty_dir = volumes[mount["name"]].get("emptyDir")
        assert empty_dir is not None, f"{name}: only emptyDir volumes run here, not {mount['name']}"
        size = int(sizing.quantity(str(empty_dir["sizeLimit"])))
        if empty_dir.get("medium") == "Memory" and mount["mountPath"] == "/dev/shm":
            spec.shm_bytes = size
        else:
            spec.tmpfs[mount["mountPath"]] = size
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        spec.cpus = str(sizing.quantity(str(limits["cpu"])))
    if "memory" in limits:
        spec.memory_bytes = int(sizing.quantity(str(limits["memory"])))
    return spec


class Container:
    """One running container: started detached, its stdout followed for the ready line."""

    def __init__(self, spec: RunSpec, labels: Mapping[str, str]) -> None:
        self.spec = spec
        self.labels = dict(labels)
        self.ready: dict[str, Any] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._follow: subprocess.Popen[str] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> Container:
        docker("run", *self.spec.args(self.labels), env=self.spec.secret_env)
        self._follow = subprocess.Popen(
            ["docker", "logs", "--follow", self.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the service's log lines; `logs()` shows them on failure
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self._follow is not None and self._follow.stdout is not None
        for line in self._follow.stdout:
            self._lines.put(line)
        self._lines.put(None)  # the container's output ended: it exited

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Waits for the ``TALOS_READY {json}`` line; fails with the logs if it exits first."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{self.name}: not ready after {timeout} s\n{self.logs()}") from None
            if line is None:
                raise AssertionError(f"{self.name} exited before it was ready\n{self.logs()}")
            if line.startswith(READY_PREFIX):
                self.ready = json.loads(line[len(READY_PREFIX) :])
                return self.ready

    def inspect(self) -> Doc:
        (found,) = json.loads(docker("inspect", self.name).stdout)
        return dict(found)

    def ip(self, network: str) -> str:
        return str(self.inspect()["NetworkSettings"]["Networks"][network]["IPAddress"])

    def exec(self, *argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        flags: list[str] = []
        for key in env or {}:
            flags += ["--env", key]
        return docker("exec", *flags, self.name, *argv, env=env, check=False, timeout=120)

    def logs(self) -> str:
        done = docker("logs", "--tail", "60", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        # SIGTERM first, as the kubelet does: the service drains and exits.
        docker("stop", "--time", "30", self.name, check=False, timeout=90)
        docker("rm", "--force", "--volumes", self.name, check=False)
        if self._follow is not None:
            self._follow.wait(timeout=30)


def engine_running() -> bool:
    try:
        return docker("info", check=False, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def network_gateway(network: str) -> str:
    """The host's address on a Docker network (where a container on host networking listens)."""
    (found,) = json.loads(docker("network", "inspect", network).stdout)
    return str(found["IPAM"]["Config"][0]["Gateway"])


def image_user(image: str) -> str:
    (found,) = json.loads(docker("image", "inspect", image).stdout)
    return str(found["Config"]["User"])
