"""Kubernetes resource quantities and what a rendering asks the scheduler for.

A pod asks for the larger of its init containers' biggest request and the sum of its containers'
requests (init containers run one at a time, before the others); a workload asks for that times
its replicas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.deploy import k8s

_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(" + "|".join(s for s in _SUFFIX if s) + r")?$")


def quantity(text: str) -> Decimal:
    """``"250m"`` → 0.25, ``"1Gi"`` → 1073741824; a ValueError for anything else."""
    found = _QUANTITY.match(text)
    if not found:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return Decimal(found.group(1)) * _SUFFIX[found.group(2) or ""]


@dataclass(frozen=True)
class Resources:
    cpu: Decimal  # cores
    memory: Decimal  # bytes

    @classmethod
    def of(cls, cpu: str, memory: str) -> Resources:
        return cls(quantity(cpu), quantity(memory))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def fits(self, room: Resources) -> bool:
        return self.cpu <= room.cpu and self.memory <= room.memory

    def __str__(self) -> str:
        return f"{self.cpu.normalize():f} CPU, {(self.memory / _SUFFIX['Gi']).normalize():f} GiB"


NOTHING = Resources(Decimal(0), Decimal(0))
GiB = _SUFFIX["Gi"]
# A minimal machine to try the dev overlay on (kind, minikube, k3s), and what the cluster's own
# pods ask for on it: kind's control plane requests 0.95 core (API server, etcd, controller
# manager, scheduler, two CoreDNS, kindnet), minikube's 0.75. docs/operations.md states both.
DEV_NODE = Resources.of("2", "8Gi")
SYSTEM_MARGIN = Resources.of("1", "1Gi")


def cores(value: Decimal) -> str:
    return f"{value.normalize():f}"


def gibibytes(value: Decimal) -> str:
    return f"{(value / GiB).normalize():f}"


def requests(container: dict[str, Any]) -> Resources:
    asked = container.get("resources", {}).get("requests", {})
    return Resources(quantity(str(asked.get("cpu", "0"))), quantity(str(asked.get("memory", "0"))))


def pod_requests(workload: dict[str, Any]) -> Resources:
    spec = k8s.pod_spec(workload)
    running = NOTHING
    for container in spec.get("containers", []):
        running = running + requests(container)
    inits = [requests(c) for c in spec.get("initContainers", [])]
    return Resources(
        max([running.cpu, *(i.cpu for i in inits)]),
        max([running.memory, *(i.memory for i in inits)]),
    )


def total_requests(docs: list[dict[str, Any]]) -> Resources:
    total = NOTHING
    for workload in k8s.workloads(docs):
        replicas = int(workload["spec"].get("replicas", 1))
        for _ in range(replicas):
            total = total + pod_requests(workload)
    return total


def quantities(docs: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Every resource quantity of a rendering, with where it is (containers, volumes, claims)."""
    found: list[tuple[str, Any]] = []

    def claim(where: str, spec: dict[str, Any]) -> None:
        for kind, values in spec.get("resources", {}).items():
            found.extend((f"{where}.resources.{kind}.{k}", v) for k, v in values.items())

    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "PersistentVolumeClaim":
            claim(name, doc["spec"])
        if doc in k8s.workloads(docs):
            for container in k8s.containers(doc):
                claim(f"{name}:{container['name']}", container)
            for volume in k8s.pod_spec(doc).get("volumes", []):
                limit = volume.get("emptyDir", {}).get("sizeLimit")
                if limit is not None:
                    found.append((f"{name}.volumes.{volume['name']}.sizeLimit", limit))
            for template in doc["spec"].get("volumeClaimTemplates", []):
                claim(f"{name}.volumeClaimTemplates.{template['metadata']['name']}", template["spec"])
    return found
