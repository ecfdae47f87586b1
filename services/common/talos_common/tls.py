"""TLS for the gRPC listeners that leave the cluster, from certificate files that may rotate.

The server reads its certificate chain and key from files (a Kubernetes Secret that
cert-manager renews in place). gRPC asks :class:`RotatingCertificate` for the configuration
at every new handshake; it returns a fresh one only when a file changed, so a renewed
certificate reaches new connections at once while open streams keep the session they have.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from talos_common.server import PortInUse

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    stamp: tuple[float, float, int, int]
    config: grpc.ServerCertificateConfiguration


class RotatingCertificate:
    """A certificate and key from files, reloaded when either file changes."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._loaded = self._load()  # a missing or unreadable file fails at start

    def _stamp(self) -> tuple[float, float, int, int]:
        cert, key = os.stat(self.cert_file), os.stat(self.key_file)
        return (cert.st_mtime, key.st_mtime, cert.st_ino, key.st_ino)

    def _load(self) -> _Loaded:
        stamp = self._stamp()
        chain = self.cert_file.read_bytes()
        key = self.key_file.read_bytes()
        config = grpc.ssl_server_certificate_configuration([(key, chain)])
        return _Loaded(stamp, config)

    @property
    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._loaded.config

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or None to keep the current."""
        try:
            if self._stamp() == self._loaded.stamp:
                return None
            self._loaded = self._load()
        except OSError as error:
            # Mid-rotation (one file written, the other not yet): keep serving the last good pair.
            log.warning("certificate files unreadable; keeping the current ones", extra={"error": str(error)})
            return None
        log.info("certificate reloaded", extra={"cert_file": str(self.cert_file)})
        return self._loaded.config


def server_credentials(cert_file: Path, key_file: Path) -> grpc.ServerCredentials:
    rotating = RotatingCertificate(cert_file, key_file)
    return grpc.dynamic_ssl_server_credentials(rotating.initial, rotating.fetch)


def bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    setting: str,
    cert_file: Path | None,
    key_file: Path | None,
) -> int:
    """A TLS listener when both files are given, else a plaintext one (for inside the cluster)."""
    from talos_common.server import bind as bind_plain

    if cert_file is None and key_file is None:
        return bind_plain(server, host, port, setting)
    if cert_file is None or key_file is None:
        raise ValueError(f"{setting}: TLS needs both a certificate file and a key file")
    credentials = server_credentials(cert_file, key_file)
    try:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise PortInUse(setting, host, port)
    return bound


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT names this machine (a token may cross it in plaintext)."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channel_credentials(ca_file: Path | None) -> grpc.ChannelCredentials:
    """Verifies the server against ``ca_file``, or the system roots when None."""
    roots = ca_file.read_bytes() if ca_file is not None else None
    return grpc.ssl_channel_credentials(root_certificates=roots)
