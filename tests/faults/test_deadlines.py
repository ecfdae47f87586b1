"""Deadlines propagate and SIGTERM drains: a client giving up frees everything it held."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_dev.mesh import LocalMesh

from .conftest import http, verbose_mesh

HOLD_TTL = 8
CAPTURED, HELD = 2, 1


@pytest.fixture(scope="module")
def drain_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    mesh = verbose_mesh(
        tmp_path_factory.mktemp("deadlines"),
        billing_env={"TALOS_BILLING_HOLD_TTL_SECONDS": str(HOLD_TTL), "TALOS_BILLING_SWEEP_SECONDS": "1"},
    )
    try:
        mesh.start(nodes=1)
        yield mesh
    finally:
        mesh.stop()


def _metric(mesh: LocalMesh, name: str, **labels: str) -> float:
    with urllib.request.urlopen(mesh.http_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _wait_balance(mesh: LocalMesh, account_id: str, expected: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    balance = -1
    while time.monotonic() < deadline:
        balance = mesh.account(account_id).balance
        if balance == expected:
            return balance
        time.sleep(0.05)
    return balance


def test_slow_moderation_call_is_cancelled_when_the_client_gives_up(drain_mesh: LocalMesh) -> None:
    account = drain_mesh.create_account(1000)
    labels = {"service": "moderation", "method": "CheckPrompt", "outcome": "cancelled"}
    count_before = _metric(drain_mesh, "talos_gateway_downstream_seconds_count", **labels)
    sum_before = _metric(drain_mesh, "talos_gateway_downstream_seconds_sum", **labels)
    assert drain_mesh.moderation is not None
    os.kill(drain_mesh.moderation.pid, signal.SIGSTOP)  # a moderation that never answers
    try:
        with grpc.insecure_channel(drain_mesh.grpc_addr) as channel:
            stub = api_pb2_grpc.ImageServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                list(
                    stub.Generate(
                        api_pb2.GenerateRequest(prompt="a slow river", steps=2),
                        metadata=[("authorization", f"Bearer {account.api_key}")],
                        timeout=1.0,
                    )
                )
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 5
        while _metric(drain_mesh, "talos_gateway_downstream_seconds_count", **labels) <= count_before:
            assert time.monotonic() < deadline, "the moderation call was not cancelled"
            time.sleep(0.02)
        held_for = _metric(drain_mesh, "talos_gateway_downstream_seconds_sum", **labels) - sum_before
        # The gateway measured the call itself: it ended within 100 ms of the client's 1 s deadline.
        assert 0.5 < held_for <= 1.1, held_for
    finally:
        os.kill(drain_mesh.moderation.pid, signal.SIGCONT)
    assert drain_mesh.account(account.account_id).balance == 1000


def test_client_disconnect_mid_render_releases_the_hold(drain_mesh: LocalMesh) -> None:
    account = drain_mesh.create_account(1000)
    url = urlsplit(drain_mesh.http_url)
    body = json.dumps(
        {"prompt": "a tall ship", "steps": 40, "stream": True, "stream_format": "talos"}
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(
            (
                "POST /v1/images/generations HTTP/1.1\r\n"
                f"Host: {url.netloc}\r\nAuthorization: Bearer {account.api_key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        seen = b""
        while b"event: progress" not in seen:
            chunk = conn.recv(65536)
            assert chunk, seen[-500:]
            seen += chunk
        assert drain_mesh.account(account.account_id).balance == 1000 - 18
    # The connection is gone: the node is told to cancel and the hold is released.
    assert _wait_balance(drain_mesh, account.account_id, 1000) == 1000
    follow_up = http(
        "POST",
        drain_mesh.http_url + "/v1/images/generations",
        account.api_key,
        {"prompt": "a boat", "steps": 2},
    )
    assert follow_up.status == 200, follow_up.body


def _wait_ready(mesh: LocalMesh, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not mesh.readiness().get("ready"):
        assert time.monotonic() < deadline, f"the gateway is not ready: {mesh.readiness()}"
        time.sleep(0.05)


def _stream_job(mesh: LocalMesh, key: str, events: list[str], started: threading.Event) -> None:
    request = urllib.request.Request(
        mesh.http_url + "/v1/images/generations",
        data=json.dumps(
            {"prompt": "harbour lights", "steps": 12, "stream": True, "stream_format": "talos"}
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    events.append(line[len("event: ") :])
                    if line.endswith("progress"):
                        started.set()
    except OSError:
        events.append("connection_lost")
    finally:
        started.set()


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["render", "gateway", "moderation", "billing"])
def test_sigterm_with_jobs_in_flight_loses_nothing(drain_mesh: LocalMesh, victim: str) -> None:
    drain_mesh.wait_for_nodes(1)  # the node restarted by the previous case must be back
    _wait_ready(drain_mesh)  # and the gateway must reach billing and moderation again
    account = drain_mesh.create_account(1000)
    events: list[str] = []
    started = threading.Event()
    client = threading.Thread(target=_stream_job, args=(drain_mesh, account.api_key, events, started))
    client.start()
    assert started.wait(120)
    assert "progress" in events, f"the job never rendered: {events}"
    proc = {
        "render": drain_mesh.nodes[0],
        "gateway": drain_mesh.gateway,
        "moderation": drain_mesh.moderation,
        "billing": drain_mesh.billing,
    }[victim]
    assert proc is not None
    code = proc.stop(timeout=60)  # SIGTERM, then wait for the drain
    assert code == 0, f"{victim} exited with {code}"
    client.join(timeout=120)
    drain_mesh.restart(proc)
    if victim == "gateway":
        drain_mesh.wait_for_nodes(1)
    terminal = [e for e in events if e in ("completed", "failed", "connection_lost")]
    assert len(terminal) == 1, events
    # A hold left by a drained service expires within HOLD_TTL and billing releases it itself.
    db = sqlite3.connect(Path(drain_mesh.data_dir) / "billing.db")
    deadline = time.monotonic() + HOLD_TTL + 10
    while True:
        query = "SELECT state FROM holds WHERE account_id = ?"
        states = [s for (s,) in db.execute(query, (account.account_id,))]
        if HELD not in states or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    db.close()
    assert HELD not in states, states
    charged = states.count(CAPTURED)
    assert drain_mesh.account(account.account_id).balance == 1000 - 18 * charged
    if terminal[0] == "completed":
        assert charged == 1
    elif terminal[0] == "failed":
        assert charged == 0
    if victim in ("render", "gateway"):
        # Draining means the job in hand finishes instead of being dropped.
        assert terminal[0] == "completed", events


def test_a_node_that_stops_answering_times_out_with_504_and_a_refund(tmp_path: Path) -> None:
    mesh = verbose_mesh(
        tmp_path / "var",
        gateway_env={
            "TALOS_GATEWAY_ACCEPT_TIMEOUT_SECONDS": "1",
            "TALOS_GATEWAY_JOB_TIMEOUT_BASE_SECONDS": "2",
            "TALOS_GATEWAY_JOB_TIMEOUT_PER_STEP_MEGAPIXEL_SECONDS": "0",
            "TALOS_GATEWAY_MAX_ATTEMPTS": "1",
        },
    )
    try:
        mesh.start(nodes=1)
        account = mesh.create_account(1000)
        node = mesh.nodes[0]
        os.kill(node.pid, signal.SIGSTOP)  # connected, but it never answers the job
        try:
            reply = http(
                "POST",
                mesh.http_url + "/v1/images/generations",
                account.api_key,
                {"prompt": "a kite", "steps": 2},
            )
        finally:
            os.kill(node.pid, signal.SIGCONT)
        assert reply.status == 504, reply.body
        assert reply.body["error"]["code"] == "timeout"
        assert _wait_balance(mesh, account.account_id, 1000) == 1000
    finally:
        mesh.stop()
