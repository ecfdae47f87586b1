"""Server TLS from files that rotate: new connections get the new certificate, old ones stay."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talos_common import tls
from talos_common.server import build_server

from .tlsca import TestCA


def _peer_certificate(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as wrapped:
            der = wrapped.getpeercert(binary_form=True)
            assert der is not None
            return der


async def test_rotating_certificate_reaches_new_connections_and_keeps_old_streams(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    first = ca.issue("first")
    second = ca.issue("second")
    live_cert, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.cert, live_cert)
    shutil.copy(first.key, live_key)
    server, _ = build_server([], ["talos.test"])
    port = tls.bind(server, "127.0.0.1", 0, "TEST_PORT", live_cert, live_key)
    await server.start()
    try:
        old = grpc.aio.secure_channel(f"localhost:{port}", tls.channel_credentials(ca.cert))
        stub = health_pb2_grpc.HealthStub(old)
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        before = _peer_certificate(port, ca.cert)
        # cert-manager writes new files in place of the old ones.
        shutil.copy(second.cert, live_cert)
        shutil.copy(second.key, live_key)
        after = _peer_certificate(port, ca.cert)
        assert before != after
        assert after == ssl.PEM_cert_to_DER_cert(second.cert.read_text())
        # The channel opened before the rotation still works.
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        await old.close()
    finally:
        await server.stop(0)


async def test_a_client_with_another_ca_or_plaintext_is_refused(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    stranger = TestCA(tmp_path / "stranger", name="stranger-ca")
    issued = ca.issue("server")
    server, _ = build_server([], ["talos.test"])
    port = tls.bind(server, "127.0.0.1", 0, "TEST_PORT", issued.cert, issued.key)
    await server.start()
    try:
        for channel in (
            grpc.aio.secure_channel(f"localhost:{port}", tls.channel_credentials(stranger.cert)),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            await channel.close()
    finally:
        await server.stop(0)


def test_loopback_is_told_apart() -> None:
    assert (
        tls.is_loopback("127.0.0.1:50052") and tls.is_loopback("localhost:1") and tls.is_loopback("[::1]:5")
    )
    assert not tls.is_loopback("relay.example.org:443") and not tls.is_loopback("10.0.0.4:50052")
