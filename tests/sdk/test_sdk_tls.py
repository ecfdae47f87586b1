"""TLS between the SDK (and the CLI) and a gateway, with a CA made for the test by ``openssl``.

A real ``grpc.aio`` server serves ImageService.GetOptions over TLS with a certificate that CA
signed; the client trusts it through ``ca_file`` / ``--ca-file`` / ``TALOS_CA_FILE``, and one
trusting another CA, or only the system's roots, is refused. Which addresses get plaintext by
default (loopback only) is checked on the client's own decision.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import talos_sdk
from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_sdk import _channel, cli

PRICE_SENT = 23  # not the real price: the answer must come from this server


@dataclass(frozen=True)
class Authority:
    ca: Path  # the CA's certificate (what a client trusts)
    key: bytes  # the server's key and certificate, signed by the CA
    chain: bytes


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _authority(folder: Path, name: str) -> Authority:
    """A CA and a server certificate for localhost and 127.0.0.1 that it signed."""
    folder.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", f"/CN=TALOS test CA {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=folder)
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=folder,
    )  # fmt: skip
    return Authority(
        folder / "ca.pem", (folder / "server.key").read_bytes(), (folder / "server.pem").read_bytes()
    )


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority]:
    base = tmp_path_factory.mktemp("tls")
    return _authority(base / "trusted", "one"), _authority(base / "other", "two")


class OptionsOnly(api_pb2_grpc.ImageServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, Any]] = []

    async def GetOptions(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.metadata.append(dict(context.invocation_metadata() or ()))
        return api_pb2.Options(price_per_image=PRICE_SENT, output_formats=["png"])

    async def GetAccount(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.metadata.append(dict(context.invocation_metadata() or ()))
        return api_pb2.Account(account_id="acc-tls", price_per_image=PRICE_SENT)


@pytest.fixture
async def tls_server(authorities: tuple[Authority, Authority]) -> AsyncIterator[tuple[OptionsOnly, int]]:
    trusted, _ = authorities
    servicer = OptionsOnly()
    server = grpc.aio.server()
    api_pb2_grpc.add_ImageServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(trusted.key, trusted.chain)]))
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(grace=None)


def _blocking_options(address: str, **options: Any) -> talos_sdk.Options:
    with talos_sdk.Client(None, address, timeout=5, connect_retries=0, **options) as client:
        return client.options()


async def test_the_sdk_verifies_the_gateway_with_a_ca_file(tls_server, authorities):
    servicer, port = tls_server
    trusted, other = authorities
    # The blocking client in a thread: this loop serves the calls.
    got = await asyncio.to_thread(_blocking_options, f"localhost:{port}", ca_file=trusted.ca)
    assert got.price_per_image == PRICE_SENT
    async with talos_sdk.AsyncClient("tk_secret", f"127.0.0.1:{port}", ca_file=str(trusted.ca)) as client:
        account = await client.account()
    assert account.account_id == "acc-tls"
    assert servicer.metadata[-1]["authorization"] == "Bearer tk_secret"

    # 127.0.0.1 from here on: localhost may also be tried as ::1, where nobody listens, and that
    # refusal must not stand in for the handshake's.
    with pytest.raises(talos_sdk.ServiceUnavailable) as refused:
        await asyncio.to_thread(_blocking_options, f"127.0.0.1:{port}", ca_file=other.ca)
    assert refused.value.transport and "handshake" in refused.value.message.lower()
    # The system's roots do not know the test CA either.
    with pytest.raises(talos_sdk.ServiceUnavailable) as refused:
        await asyncio.to_thread(_blocking_options, f"127.0.0.1:{port}", tls=True)
    assert "handshake" in refused.value.message.lower()
    # Plaintext (the default to a loopback address) does not get through a TLS listener.
    with pytest.raises(talos_sdk.ServiceUnavailable):
        await asyncio.to_thread(_blocking_options, f"127.0.0.1:{port}")
    assert len(servicer.metadata) == 2  # only the verified connections reached the service


def _cli(*args: str) -> int:
    return cli.main(list(args))


async def test_the_cli_takes_a_ca_file_from_its_flag_or_the_environment(
    tls_server, authorities, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    _, port = tls_server
    trusted, other = authorities
    address = f"127.0.0.1:{port}"
    code = await asyncio.to_thread(
        _cli, "options", "--json", "--address", address, "--ca-file", str(trusted.ca)
    )
    assert code == cli.EXIT_OK and capsys.readouterr().out.count(f'"price_per_image": {PRICE_SENT}') == 1

    monkeypatch.setenv(_channel.ENV_CA_FILE, str(other.ca))
    code = await asyncio.to_thread(_cli, "options", "--address", address, "--timeout", "5")
    err = capsys.readouterr().err
    assert code == cli.EXIT_TRANSIENT and "TLS handshake failed" in err and "--ca-file" in err

    monkeypatch.setenv(_channel.ENV_CA_FILE, str(trusted.ca))
    code = await asyncio.to_thread(_cli, "account", "--api-key", "tk", "--address", address, "--json")
    assert code == cli.EXIT_OK and '"account_id": "acc-tls"' in capsys.readouterr().out

    not_pem = trusted.ca.with_name("not.pem")
    not_pem.write_text("nothing here")
    assert _cli("options", "--address", address, "--ca-file", str(not_pem)) == cli.EXIT_USAGE
    assert "holds no PEM certificate" in capsys.readouterr().err
    absent = str(not_pem.with_name("absent.pem"))
    assert _cli("options", "--address", address, "--ca-file", absent) == cli.EXIT_USAGE
    assert "cannot read the CA file" in capsys.readouterr().err
    assert _cli("options", "--address", address, "--insecure", "--ca-file", str(trusted.ca)) == cli.EXIT_USAGE


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:443", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("ipv4:127.0.0.1:50051", True),
        ("dns:///localhost:50051", True),
        ("unix:/run/talos.sock", True),
        ("api.talos.example:443", False),
        ("dns:///api.talos.example:443", False),
        ("203.0.113.7:50051", False),
        ("[2001:db8::1]:443", False),
        ("localhost.evil.example:443", False),
        ("10.0.0.5:50051", False),
    ],
)
def test_plaintext_by_default_only_to_loopback(address: str, loopback: bool, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(_channel.ENV_TLS, raising=False)
    monkeypatch.delenv(_channel.ENV_CA_FILE, raising=False)
    assert _channel.is_loopback(address) is loopback
    assert _channel.resolve_transport(address, None, None, None).tls is (not loopback)
    # Asking wins either way; plaintext to a remote address only when asked for by name.
    assert _channel.resolve_transport(address, True, None, None).tls is True
    assert _channel.resolve_transport(address, False, None, None).tls is False
    monkeypatch.setenv(_channel.ENV_TLS, "1")
    assert talos_sdk.Client("tk", address).transport.tls is True
    monkeypatch.setenv(_channel.ENV_TLS, "0")
    assert talos_sdk.Client("tk", address).transport.tls is False
    assert talos_sdk.Client("tk", address, tls=True).transport.tls is True


def test_conflicting_tls_settings_are_refused(authorities, monkeypatch: pytest.MonkeyPatch):
    trusted, _ = authorities
    with pytest.raises(ValueError, match="needs TLS"):
        _channel.resolve_transport("127.0.0.1:1", False, trusted.ca, None)
    with pytest.raises(ValueError, match="not both"):
        _channel.resolve_transport("127.0.0.1:1", None, trusted.ca, b"x")
    monkeypatch.setenv(_channel.ENV_TLS, "maybe")
    with pytest.raises(ValueError, match="TALOS_TLS"):
        _channel.resolve_transport("127.0.0.1:1", None, None, None)
    # A CA file in the environment means TLS even to loopback; an explicit tls=False ignores it.
    monkeypatch.setenv(_channel.ENV_TLS, "auto")
    monkeypatch.setenv(_channel.ENV_CA_FILE, str(trusted.ca))
    assert _channel.resolve_transport("127.0.0.1:1", None, None, None).roots == trusted.ca.read_bytes()
    assert _channel.resolve_transport("127.0.0.1:1", False, None, None).tls is False
