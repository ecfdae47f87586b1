"""Issue 2's acceptance: one real request travels the whole mesh, started as `make up` starts it."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from talos_dev.mesh import LocalMesh

from .conftest import mesh_moderation_env


def _post(url: str, key: str, body: dict[str, object], timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _get(url: str, key: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


@pytest.mark.slow
def test_make_up_serves_a_generation_and_stops_cleanly(tmp_path: Path) -> None:
    """`python -m talos_dev.mesh up` is what `make up` runs; ports 0 keep the test off fixed ports."""
    env = {
        **os.environ,
        "TALOS_BILLING_PORT": "0",
        "TALOS_MODERATION_PORT": "0",
        "TALOS_GATEWAY_HTTP_PORT": "0",
        "TALOS_GATEWAY_GRPC_PORT": "0",
        "TALOS_GATEWAY_RELAY_PORT": "0",
        "TALOS_RENDER_HEALTH_PORT": "0",
        "TALOS_RENDER_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "talos_dev.mesh", "up", "--data-dir", str(tmp_path / "var")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: dict[str, str] = {}
    try:
        assert up.stdout is not None
        for line in up.stdout:
            for label in ("TALOS gateway: ", "Demo API key: ", "Relay: "):
                if line.startswith(label):
                    lines[label] = line[len(label) :].strip()
            if "Relay: " in lines or up.poll() is not None:
                break
        assert set(lines) == {"TALOS gateway: ", "Demo API key: ", "Relay: "}, lines
        page = lines["TALOS gateway: "]
        assert page.startswith("http://127.0.0.1:") and page.endswith("/create")
        base = page.removesuffix("/create")
        key = lines["Demo API key: "]

        before = _get(base + "/v1/account", key)
        assert before["balance"] == 1000
        status, body = _post(
            base + "/v1/images/generations", key, {"prompt": "a lighthouse at dusk", "steps": 4}
        )
        assert status == 200, body
        image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
        assert (image.format, image.size) == ("PNG", (1024, 1024))
        after = _get(base + "/v1/account", key)
        assert after["balance"] == before["balance"] - 18
    finally:
        up.send_signal(signal.SIGTERM)
        rest = up.communicate(timeout=60)[0]
    assert up.returncode == 0, rest
    assert "TALOS stopped." in rest


def test_no_render_node_fails_clearly_and_charges_nothing(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path, moderation_env=mesh_moderation_env())
    try:
        mesh.start(nodes=0)
        account = mesh.create_account(1000)
        status, body = _post(
            mesh.http_url + "/v1/images/generations", account.api_key, {"prompt": "a lighthouse at dusk"}
        )
        assert status == 503, body
        assert body["error"]["code"] == "no_capacity"
        assert "node" in body["error"]["message"].lower()
        state = mesh.account(account.account_id)
        assert state.balance == 1000
    finally:
        mesh.stop()
