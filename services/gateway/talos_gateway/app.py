"""Wires the gateway: billing and moderation channels, the relay, the public gRPC API, HTTP.

:func:`create_server` builds everything and binds the HTTP and public gRPC listeners on
``settings.host`` (ports may be 0); :meth:`Gateway.start` serves them and starts the relay.
On SIGTERM/SIGINT :meth:`Gateway.stop` drains: new jobs get 503 ``no_capacity``, jobs in
flight get ``drain_grace_seconds`` to finish, the rest fail and are refunded, then the
servers stop and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import Any

import grpc
from aiohttp import web

from talos_common import tls
from talos_common.server import PortInUse, build_server, set_serving
from talos_common.service import main as run_service
from talos_common.settings import env_name
from talos_gateway import grpc_api, http_api
from talos_gateway.config import PREFIX, Settings
from talos_gateway.downstream import Billing, Moderation, open_channel
from talos_gateway.jobs import JobRegistry
from talos_gateway.relay import Relay, start_relay_server

log = logging.getLogger("talos_gateway")


class Gateway:
    """Every part of one gateway process: built by :func:`create_server`, then started and stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        timeout = settings.downstream_timeout_seconds
        self.billing_channel = open_channel(settings.billing_addr, settings.relay_max_message_bytes)
        self.moderation_channel = open_channel(settings.moderation_addr, settings.relay_max_message_bytes)
        self.billing = Billing(self.billing_channel, timeout)
        self.moderation = Moderation(self.moderation_channel, timeout)
        self.relay = Relay(settings, self.billing.authenticate_node, self.billing.active_nodes)
        self.registry = JobRegistry(settings, self.billing, self.moderation, self.relay)
        self.server, self.health = build_server(
            [lambda server: grpc_api.register(server, self.registry)],
            [grpc_api.SERVICE_NAME],
            max_message_bytes=settings.relay_max_message_bytes,
            # Requests are small: refuse big ones unread; replies carry images (up to the relay cap).
            extra_options=[("grpc.max_receive_message_length", settings.max_request_bytes)],
        )
        self.port = 0
        self.http_socket: socket.socket | None = None
        self.runner: web.AppRunner | None = None
        self.relay_server: grpc.aio.Server | None = None
        self._addresses: dict[str, str] = {}

    @property
    def addresses(self) -> dict[str, str]:
        return dict(self._addresses)

    def bind(self) -> None:
        """Claims the HTTP and gRPC ports now, so a port in use is named before anything serves."""
        s = self.settings
        self.port = tls.bind(
            self.server,
            s.host,
            s.grpc_port,
            env_name(PREFIX, "grpc_port"),
            s.grpc_tls_cert_file,
            s.grpc_tls_key_file,
        )
        self.http_socket = _listen(s.host, s.http_port, env_name(PREFIX, "http_port"))
        http_port = self.http_socket.getsockname()[1]
        self._addresses = {"http": f"http://{s.host}:{http_port}", "grpc": f"{s.host}:{self.port}"}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        billing_ok, moderation_ok = await asyncio.gather(self.billing.healthy(), self.moderation.healthy())
        accepting = self.registry.accepting
        status = self.relay.status()
        body: dict[str, Any] = {
            "ready": bool(billing_ok and moderation_ok and accepting),
            "billing": billing_ok,
            "moderation": moderation_ok,
            "accepting": accepting,
            "nodes_connected": int(status.get("nodes_connected", 0)),
            "nodes_idle": int(status.get("nodes_idle", 0)),
            "queue_length": int(status.get("queue_length", 0)),
            "jobs_active": len(self.registry.active_jobs()),
        }
        return body["ready"], body

    async def start(self) -> None:
        s = self.settings
        self.relay_server, relay_port = await start_relay_server(self.relay, s)
        self._addresses["relay"] = f"{s.host}:{relay_port}"
        if self.relay.network is not None:
            self._addresses["peer"] = self.relay.network.peer_address
        self.registry.start()
        await self.server.start()
        await set_serving(self.health, [grpc_api.SERVICE_NAME], True)
        app = http_api.build_app(s, self.registry, self.readiness, [self.relay.metrics_registry])
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5.0)
        await self.runner.setup()
        assert self.http_socket is not None
        await web.SockSite(self.runner, self.http_socket, backlog=512).start()
        log.info("gateway listening", extra=self.addresses)

    async def stop(self) -> None:
        """Stop accepting, let jobs finish within the grace, fail and refund the rest, stop."""
        s = self.settings
        log.info("draining", extra={"grace_seconds": s.drain_grace_seconds})
        self.registry.accepting = False
        await set_serving(self.health, [grpc_api.SERVICE_NAME], False)
        # Relay first: it lets renders finish within the grace, then fails what is left
        # (the pipeline then releases those holds); the registry then waits for every image's end.
        await self.relay.drain(s.drain_grace_seconds)
        await self.registry.drain(s.downstream_timeout_seconds * 2)
        await self.close()
        log.info("gateway stopped")

    async def close(self) -> None:
        await self.registry.close()
        await self.relay.close()
        await self.server.stop(1.0)
        if self.relay_server is not None:
            await self.relay_server.stop(1.0)
        if self.runner is not None:
            await self.runner.cleanup()
        elif self.http_socket is not None:
            self.http_socket.close()
        for channel in (self.billing_channel, self.moderation_channel):
            with contextlib.suppress(Exception):
                await channel.close()


def _listen(host: str, port: int, setting: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise PortInUse(setting, host, port) from None
        raise
    sock.setblocking(False)
    return sock


async def create_server(settings: Settings) -> Gateway:
    gateway = Gateway(settings)
    try:
        gateway.bind()
    except BaseException:
        await gateway.close()
        raise
    return gateway


def main() -> None:
    run_service("gateway", Settings, PREFIX, create_server)
