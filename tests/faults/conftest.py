"""A mesh of its own for the fault, privacy and security suite, logging at its most verbose."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from talos_dev.mesh import LocalMesh

from ..conftest import IN_CI, mesh_moderation_env

DEBUG_ENV = {
    "TALOS_BILLING_LOG_LEVEL": "debug",
    "TALOS_MODERATION_LOG_LEVEL": "debug",
    "TALOS_GATEWAY_LOG_LEVEL": "debug",
    "TALOS_RENDER_LOG_LEVEL": "debug",
}


def verbose_mesh(data_dir: Path, **kwargs: Any) -> LocalMesh:
    """Temporary files of every service land under the data folder too, so scans see them."""
    tmp = data_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**DEBUG_ENV, "TMPDIR": str(tmp), **kwargs.pop("env", {})}
    return LocalMesh(data_dir, env=env, moderation_env=mesh_moderation_env(), **kwargs)


@pytest.fixture(scope="module")
def debug_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    mesh = verbose_mesh(tmp_path_factory.mktemp("faults"))
    try:
        mesh.start(nodes=1)
        yield mesh
    finally:
        mesh.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def http(
    method: str,
    url: str,
    key: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status, head = response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw = error.read()
        status, head = error.code, dict(error.headers)
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return Reply(status, head, parsed)


def postgres_dsn() -> str | None:
    """A fresh database on the local PostgreSQL, or None when no server answers."""
    name = f"talos_privacy_{uuid.uuid4().hex[:10]}"
    try:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", f"CREATE DATABASE {name}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        if IN_CI:
            raise
        return None
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def postgres_dump(dsn: str) -> bytes:
    database = dsn.rsplit("/", 1)[1]
    return subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", database],
        check=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    ).stdout
