"""Where a file a container reads comes from: which volume, which Secret or ConfigMap, which key.

Certificates, keys and CA bundles must come from a Secret or a ConfigMap mounted read-only and
whole: the kubelet updates such a mount when the object changes (a cert-manager renewal), but
never a ``subPath`` mount, so a file there would stay old until the pod restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

Doc = dict[str, Any]
# The field naming the object, per kind, in a volume and in a projected volume's source.
_VOLUME_NAME = {"secret": "secretName", "configMap": "name"}
_PROJECTED_NAME = {"secret": "name", "configMap": "name"}


@dataclass(frozen=True)
class Source:
    kind: str  # "secret" or "configMap"
    name: str  # of the Secret or ConfigMap
    key: str  # the key whose value is the file
    mount: Doc  # the container's volumeMount


def _objects(volume: Doc) -> Iterator[tuple[str, str, list[Doc] | None]]:
    """(kind, name, items) of each Secret or ConfigMap a volume shows."""
    for kind, field in _VOLUME_NAME.items():
        if kind in volume:
            yield kind, volume[kind][field], volume[kind].get("items")
    for source in volume.get("projected", {}).get("sources", []):
        for kind, field in _PROJECTED_NAME.items():
            if kind in source:
                yield kind, source[kind][field], source[kind].get("items")


def _mount_of(container: Doc, path: PurePosixPath) -> Doc | None:
    """The mount the path lies on (the deepest, as nested mounts hide what is below them)."""
    found = [m for m in container.get("volumeMounts", []) if path.is_relative_to(m["mountPath"])]
    return max(found, key=lambda m: len(m["mountPath"]), default=None)


def file_source(pod: Doc, container: Doc, path: str) -> tuple[Source | None, list[str]]:
    """Where ``path`` comes from, and why it may not be read as it should (empty: fine)."""
    file = PurePosixPath(path)
    mount = _mount_of(container, file)
    if mount is None:
        return None, ["not on any volume (the image's read-only root has no such file)"]
    problems = []
    if mount.get("subPath") or mount.get("subPathExpr"):
        problems.append(f"{mount['mountPath']} is a subPath mount: a renewed file never reaches it")
    if mount.get("readOnly") is not True:
        problems.append(f"{mount['mountPath']} is not mounted read-only")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    relative = str(file.relative_to(mount["mountPath"]))
    for kind, name, items in _objects(volumes.get(mount["name"], {})):
        if items is None:
            if "/" not in relative:
                return Source(kind, name, relative, mount), problems
            continue
        for item in items:
            if item["path"] == relative:
                return Source(kind, name, item["key"], mount), problems
    return None, [*problems, f"{mount['mountPath']} shows no Secret or ConfigMap key as {relative}"]
