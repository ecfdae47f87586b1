"""The node link over TLS: real render nodes dial a relay that serves a certificate from files.

A CA is made in the test; the relay serves a certificate it signed for ``localhost``. A node
given that CA connects and renders; a node given another CA is refused; renewing the files
reaches new connections while a node already connected keeps its stream and keeps working.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from talos_dev.procs import ServiceProcess, python_module
from tests.relay.peer import PeerNode
from tests.tlsca import TestCA

from .conftest import MakeStack
from .stack import Stack
from .test_pipeline import _holds_settled, _post


def _node(stack: Stack, token: str, ca: Path, data_dir: Path, logs: Path, name: str) -> ServiceProcess:
    relay_port = stack.relay_addr.rsplit(":", 1)[1]
    return ServiceProcess(
        name,
        python_module("talos_render"),
        {
            "TALOS_RENDER_RELAY": f"localhost:{relay_port}",  # the name the certificate carries
            "TALOS_RENDER_TOKEN": token,
            "TALOS_RENDER_CA_FILE": str(ca),
            "TALOS_RENDER_MODEL": "builtin",
            "TALOS_RENDER_DATA_DIR": str(data_dir),
            "TALOS_RENDER_HEALTH_PORT": "0",
            "TALOS_RENDER_METRICS_PORT": "0",
            "TALOS_RENDER_RECONNECT_MAX_SECONDS": "1",
        },
        logs / f"{name}.log",
    )


async def _connected(stack: Stack, count: int, within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while stack.gateway.relay.status()["local_nodes_connected"] < count:
        assert asyncio.get_running_loop().time() < deadline, "the node did not connect over TLS"
        await asyncio.sleep(0.1)


def _served_certificate(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


@pytest.fixture
def nodes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for node in started:
        node.stop(timeout=30)


async def test_nodes_dial_a_tls_relay_and_survive_a_certificate_renewal(
    make_stack: MakeStack, tmp_path: Path, nodes: list[ServiceProcess]
) -> None:
    ca = TestCA(tmp_path / "ca")
    stranger = TestCA(tmp_path / "stranger", name="stranger-ca")
    first, second = ca.issue("relay-1"), ca.issue("relay-2")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    stack = await make_stack(relay_tls_cert_file=cert, relay_tls_key_file=key, result_ttl_seconds=5.0)
    data, logs = tmp_path / "data", tmp_path / "logs"
    _, token = await stack.billing.store.create_node_token("tls-node")
    _, stranger_token = await stack.billing.store.create_node_token("stranger-node")

    trusting = _node(stack, token, ca.cert, data, logs, "trusting")
    await asyncio.to_thread(trusting.start, 300)
    nodes.append(trusting)
    await _connected(stack, 1)

    # A node that trusts another CA never gets through the handshake, so never sends its token.
    wrong = _node(stack, stranger_token, stranger.cert, data, logs, "wrong-ca")
    await asyncio.to_thread(wrong.start, 300)
    nodes.append(wrong)
    await asyncio.sleep(2)
    assert stack.gateway.relay.status()["local_nodes_connected"] == 1
    assert "certificate" in (logs / "wrong-ca.log").read_text().lower()

    # A plaintext client gets no stream from a TLS relay.
    plain = PeerNode(stack.relay_addr, stranger_token, name="plaintext")
    await plain.start(within=5)
    assert not any(link.welcomed.is_set() for link in plain.links)
    await plain.stop()
    assert stack.gateway.relay.status()["local_nodes_connected"] == 1

    # cert-manager renews the files in place: new handshakes get the new certificate...
    relay_port = int(stack.relay_addr.rsplit(":", 1)[1])
    before = await asyncio.to_thread(_served_certificate, relay_port, ca.cert)
    shutil.copy(second.cert, cert)
    shutil.copy(second.key, key)
    after = await asyncio.to_thread(_served_certificate, relay_port, ca.cert)
    assert before != after and after == ssl.PEM_cert_to_DER_cert(second.cert.read_text())
    # ...while the node connected before keeps its stream and renders.
    assert stack.gateway.relay.status()["local_nodes_connected"] == 1
    account_id, api_key = await stack.account(1000)
    status, body = await _post(stack, api_key, "/v1/images/generations", {"prompt": "a tower", "steps": 2})
    assert status == 200 and len(body["data"]) == 1, body
    await _holds_settled(stack, body["job_id"], 1)
    assert await stack.spendable(account_id) == 1000 - 18
