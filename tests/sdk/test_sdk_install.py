"""The SDK installs into a fresh virtual environment from its own folder and pulls nothing heavy.

``import talos_sdk`` and ``talos --help`` must not import torch, diffusers or any TALOS
service package, and the environment must hold only grpcio, protobuf and their own needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "torch",
    "diffusers",
    "transformers",
    "numpy",
    "PIL",
    "onnxruntime",
    "aiohttp",
    "sqlalchemy",
    "talos_common",
    "talos_gateway",
    "talos_billing",
    "talos_moderation",
    "talos_render",
}
# googleapis-common-protos (google.rpc) must not be needed either: errors_pb2 has wire twins.
FORBIDDEN_PREFIXES = ("google.rpc", "grpc_status", "talos.billing", "talos.moderation", "talos.relay")
ALLOWED_DISTRIBUTIONS = {"grpcio", "protobuf", "talos-sdk", "typing-extensions", "pip", "setuptools", "wheel"}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(argv: list[str], cwd: Path, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=kw.pop("env", _clean_env()), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sdk-venv")
    # A copy of the SDK's own folder, so the build leaves nothing behind in the repository.
    source = base / "sdk"
    shutil.copytree(
        ROOT / "sdk",
        source,
        ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.pyc"),
    )
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # Offline-capable: build with what the new environment has when it can (setuptools >= 68
    # and wheel), else let pip fetch the build backend from the configured indexes.
    probe = _run(
        [
            str(python),
            "-c",
            "import setuptools, wheel; print(int(setuptools.__version__.split('.')[0]) >= 68)",
        ],
        cwd=base,
    )
    isolation = [] if probe.stdout.strip() != "True" else ["--no-build-isolation"]
    install = _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *isolation,
            "-c",
            str(ROOT / "requirements" / "constraints.txt"),
            str(source),
        ],
        cwd=base,
        timeout=400,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def _imported_modules(importtime_stderr: str) -> set[str]:
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name)
    return names


def _offending(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN_PREFIXES))


def test_environment_holds_only_grpcio_and_protobuf(fresh_venv: Path, tmp_path: Path):
    listed = _run([str(fresh_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {d["name"].lower().replace("_", "-") for d in json.loads(listed.stdout)}
    assert {"grpcio", "protobuf", "talos-sdk"} <= names
    assert names <= ALLOWED_DISTRIBUTIONS, names - ALLOWED_DISTRIBUTIONS


def test_import_pulls_nothing_heavy(fresh_venv: Path, tmp_path: Path):
    code = (
        "import json, sys, talos_sdk, talos_sdk.cli, talos_sdk.aio\n"
        "print(json.dumps({'file': talos_sdk.__file__, 'modules': sorted(sys.modules)}))"
    )
    done = _run([str(fresh_venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # The installed copy, not the repository's source tree.
    assert Path(result["file"]).is_relative_to(fresh_venv), result["file"]
    modules = set(result["modules"])
    # The API contract ships with the SDK (the installed copy is what it imported).
    assert {
        "grpc",
        "talos_sdk",
        "talos.api.v1.api_pb2",
        "talos.api.v1.errors_pb2",
        "talos.api.v1.contract",
    } <= modules
    assert _offending(modules) == []


def test_talos_help_imports_nothing_heavy(fresh_venv: Path, tmp_path: Path):
    env = _clean_env()
    env["PYTHONPROFILEIMPORTTIME"] = "1"  # the console script itself, with -X importtime
    done = _run([str(fresh_venv / "bin" / "talos"), "--help"], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exit codes:" in done.stdout and "generate" in done.stdout
    modules = _imported_modules(done.stderr)
    assert "talos_sdk.cli" in modules  # the probe saw the real import graph
    assert _offending(modules) == []

    sub = _run([str(fresh_venv / "bin" / "talos"), "generate", "--help"], cwd=tmp_path)
    assert (
        sub.returncode == 0 and "--steps" in sub.stdout and "--images" in sub.stdout and "130" in sub.stdout
    )
    usage = _run([str(fresh_venv / "bin" / "talos"), "generate"], cwd=tmp_path)
    assert usage.returncode == 2 and "prompt" in usage.stderr
