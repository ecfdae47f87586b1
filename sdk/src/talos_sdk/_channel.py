"""Where the client connects and how: the address, TLS or plaintext, and which roots to trust.

The API key travels with every call, so plaintext is used only where it cannot leak: to a
loopback address (the local mesh) unless TLS is asked for, or anywhere when the caller asks
for it explicitly (``tls=False``, ``talos --insecure``, ``TALOS_TLS=0``). Every other address
gets TLS, verified against the system's roots, or against a CA file when one is given.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
ENV_ADDRESS = "TALOS_ADDRESS"
#: 1/true/yes/on: always TLS; 0/false/no/off: plaintext (explicitly); unset or auto: TLS unless
#: the address is loopback.
ENV_TLS = "TALOS_TLS"
#: A PEM file of the root certificates to trust instead of the system's (implies TLS).
ENV_CA_FILE = "TALOS_CA_FILE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def resolve_address(address: str | None) -> str:
    return address or os.environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS


def target_host(address: str) -> str | None:
    """The host a gRPC target names (``host:port``, ``[v6]:port``, ``dns:///host:port``,
    ``ipv4:a.b.c.d:port``); None for a local socket (``unix:``)."""
    target = address.strip()
    scheme, _, rest = target.partition(":")
    if scheme in ("unix", "unix-abstract"):
        return None
    if scheme == "dns":
        # dns:host:port, dns:///host:port or dns://resolver/host:port
        target = rest[2:].partition("/")[2] if rest.startswith("//") else rest
    elif scheme in ("ipv4", "ipv6"):
        target = rest.split(",", 1)[0]
    if target.startswith("["):
        return target[1:].partition("]")[0]
    if target.count(":") == 1:
        return target.rpartition(":")[0]
    return target  # a bare host, or a bare IPv6 address


def is_loopback(address: str) -> bool:
    """True when the address cannot leave this machine: loopback IPs, localhost, local sockets."""
    host = target_host(address)
    if host is None:
        return True
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: it may resolve anywhere
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def env_tls() -> bool | None:
    raw = os.environ.get(ENV_TLS, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw in ("", "auto"):
        return None
    raise ValueError(f"${ENV_TLS} must be 1, 0 or auto, not {raw!r}")


def read_ca_file(path: str | os.PathLike[str]) -> bytes:
    data = Path(path).read_bytes()
    if _PEM_CERTIFICATE not in data:
        raise ValueError(f"{os.fspath(path)} holds no PEM certificate")
    return data


def system_roots() -> bytes | None:
    """The system's trusted roots (honouring ``SSL_CERT_FILE``); None to use gRPC's own bundle
    where the system has no single CA file."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile:
        try:
            return Path(cafile).read_bytes()
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class Transport:
    """How to reach the gateway: plaintext, or TLS trusting ``roots`` (None: gRPC's bundle)."""

    tls: bool
    roots: bytes | None = None
    #: Where the roots came from, for messages: a file, "system" or "grpc".
    roots_from: str = ""


def resolve_transport(
    address: str,
    tls: bool | None,
    ca_file: str | os.PathLike[str] | None,
    root_certificates: bytes | None,
) -> Transport:
    """Explicit arguments win over ``TALOS_TLS`` and ``TALOS_CA_FILE``; a CA means TLS."""
    if ca_file is not None and root_certificates is not None:
        raise ValueError("give ca_file or root_certificates, not both")
    explicit_ca = ca_file is not None or root_certificates is not None
    if tls is False:
        if explicit_ca:
            raise ValueError("a CA to verify the gateway needs TLS, but tls=False asks for plaintext")
        return Transport(False)
    if tls is None:
        tls = env_tls()
        if tls is False and not explicit_ca:
            return Transport(False)
    if ca_file is None and root_certificates is None:
        ca_file = os.environ.get(ENV_CA_FILE) or None
    if root_certificates is not None:
        return Transport(True, root_certificates, "root_certificates")
    if ca_file is not None:
        return Transport(True, read_ca_file(ca_file), os.fspath(ca_file))
    if tls is None and is_loopback(address):
        return Transport(False)
    roots = system_roots()
    return Transport(True, roots, "system" if roots is not None else "grpc")


def new_channel(module: Any, address: str, transport: Transport, options: list[tuple[str, Any]]) -> Any:
    """A channel from ``grpc`` or ``grpc.aio`` (creating one does not connect)."""
    if transport.tls:
        credentials = grpc.ssl_channel_credentials(root_certificates=transport.roots)
        return module.secure_channel(address, credentials, options=options)
    return module.insecure_channel(address, options=options)
