"""A container's environment as its process will see it: the image's ENV, then the ConfigMaps
of ``envFrom``, then ``env`` in order, with the kubelet's ``$(NAME)`` expansion, Secrets as a
placeholder and the downward API's fields as sample values."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


@dataclass
class Environment:
    values: dict[str, str]  # every variable with a literal value (image ENV, ConfigMaps, env)
    secret: set[str]  # variables taken from a Secret
    problems: list[str]
    # Variables the kubelet fills in from the pod (the downward API): name -> fieldPath.
    downward: dict[str, str] = dataclasses.field(default_factory=dict)


SECRET_PLACEHOLDER = "from-a-secret"
# What the downward API gives a pod, as sample values (the settings must load with them).
DOWNWARD_SAMPLES = {
    "status.podIP": "10.244.3.17",
    "metadata.name": "talos-gateway-7c9f8d6b5-x2x7q",
    "metadata.namespace": "talos",
}
# $(NAME) refers to a variable declared before (envFrom, then env in order); $$ is a literal $.
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, declared: Mapping[str, str]) -> tuple[str, list[str]]:
    """The kubelet's expansion of ``$(NAME)`` in an env value; also the names it left as written."""
    undefined: list[str] = []

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        if name is None:
            return "$"
        if name in declared:
            return declared[name]
        undefined.append(name)
        return found.group(0)

    return _REFERENCE.sub(replace, value), undefined


def container_environment(container: Doc, docs: list[Doc], image_env: Mapping[str, str]) -> Environment:
    declared: dict[str, str] = {}  # what the kubelet knows; the image's ENV is not part of it
    secret: set[str] = set()
    downward: dict[str, str] = {}
    problems: list[str] = []
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            found = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name]
            if not found:
                problems.append(f"envFrom ConfigMap {name} is not in the rendering")
                continue
            data = found[0].get("data", {})
            prefix = source.get("prefix", "")
            declared.update({prefix + k: str(v) for k, v in data.items()})
        else:
            problems.append(f"envFrom {sorted(source)}: only ConfigMaps (whose keys can be checked)")
    for item in container.get("env", []):
        name = item["name"]
        source = item.get("valueFrom", {})
        secret.discard(name)
        downward.pop(name, None)
        if "value" in item:
            declared[name], undefined = expand(str(item["value"]), declared)
            problems += [
                f"env {name}: $({u}) is not declared before it, so it stays as written" for u in undefined
            ]
        elif "secretKeyRef" in source:
            secret.add(name)
            declared[name] = SECRET_PLACEHOLDER
        elif "fieldRef" in source and source["fieldRef"]["fieldPath"] in DOWNWARD_SAMPLES:
            downward[name] = source["fieldRef"]["fieldPath"]
            declared[name] = DOWNWARD_SAMPLES[downward[name]]
        else:
            problems.append(f"env {name}: neither a value, a secretKeyRef nor a known fieldRef")
    return Environment({**image_env, **declared}, secret, problems, downward)
