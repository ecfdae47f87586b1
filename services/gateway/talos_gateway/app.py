"""Wires the gateway: billing and moderation channels, the relay, the public gRPC API, HTTP.

``serve()`` starts everything on ``settings.host`` (ports may be 0), prints one
``TALOS_READY {"service": "gateway", "http": "http://host:port", "grpc": "host:port",
"relay": "host:port"}`` line, and on SIGTERM/SIGINT drains: new jobs get 503 ``no_capacity``,
jobs in flight get ``drain_grace_seconds`` to finish, the rest fail and are refunded, then the
servers stop and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from grpc_health.v1 import health

from talos_common import logs
from talos_common import settings as settings_mod
from talos_common.server import announce_ready, bind, build_server, set_serving, stop_signals
from talos_gateway import grpc_api, http_api
from talos_gateway.config import PREFIX, Settings
from talos_gateway.downstream import Billing, Moderation, open_channel
from talos_gateway.jobs import JobRegistry
from talos_gateway.relay import Relay, start_relay_server

log = logging.getLogger("talos_gateway")


def _relay_counts(relay: Relay) -> dict[str, Any]:
    status = relay.status()
    return {
        "nodes_connected": int(status.get("nodes_connected", 0)),
        "nodes_idle": int(status.get("nodes_idle", 0)),
        "queue_length": int(status.get("queue_length", 0)),
    }


class Gateway:
    """Every part of one gateway process, started by :meth:`start` and drained by :meth:`drain`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        timeout = settings.downstream_timeout_seconds
        self.billing_channel = open_channel(settings.billing_addr, settings.relay_max_message_bytes)
        self.moderation_channel = open_channel(settings.moderation_addr, settings.relay_max_message_bytes)
        self.billing = Billing(self.billing_channel, timeout)
        self.moderation = Moderation(self.moderation_channel, timeout)
        self.relay = Relay(settings, self.billing.authenticate_node)
        self.registry = JobRegistry(settings, self.billing, self.moderation, self.relay)
        self.runner: web.AppRunner | None = None
        self.grpc_server: Any = None
        self.grpc_health: health.aio.HealthServicer | None = None
        self.relay_server: Any = None
        self.addresses: dict[str, str] = {}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        billing_ok, moderation_ok = await asyncio.gather(self.billing.healthy(), self.moderation.healthy())
        accepting = self.registry.accepting
        body: dict[str, Any] = {
            "ready": bool(billing_ok and moderation_ok and accepting),
            "billing": billing_ok,
            "moderation": moderation_ok,
            "accepting": accepting,
            **_relay_counts(self.relay),
            "jobs_active": len(self.registry.active_jobs()),
        }
        return body["ready"], body

    async def start(self) -> dict[str, str]:
        s = self.settings
        self.relay_server, relay_port = await start_relay_server(self.relay, s)
        self.registry.start()

        self.grpc_server, self.grpc_health = build_server(
            [lambda server: grpc_api.register(server, self.registry)],
            [grpc_api.SERVICE_NAME],
            max_message_bytes=s.relay_max_message_bytes,
            # Requests are small: refuse big ones unread; replies carry images (up to the relay cap).
            extra_options=[("grpc.max_receive_message_length", s.max_request_bytes)],
        )
        grpc_port = bind(self.grpc_server, s.host, s.grpc_port)
        await self.grpc_server.start()
        await set_serving(self.grpc_health, [grpc_api.SERVICE_NAME], True)

        app = http_api.build_app(s, self.registry, self.readiness, [self.relay.metrics_registry])
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, s.host, s.http_port, backlog=512)
        await site.start()
        http_port = _bound_port(site, s.http_port)

        self.addresses = {
            "http": f"http://{s.host}:{http_port}",
            "grpc": f"{s.host}:{grpc_port}",
            "relay": f"{s.host}:{relay_port}",
        }
        return self.addresses

    async def drain(self) -> None:
        """Stop accepting, let jobs finish within the grace, fail and refund the rest, stop."""
        s = self.settings
        log.info("draining", extra={"grace_seconds": s.drain_grace_seconds})
        self.registry.accepting = False
        if self.grpc_health is not None:
            await set_serving(self.grpc_health, [grpc_api.SERVICE_NAME], False)
        # Relay first: it lets renders finish within the grace, then fails what is left
        # (the pipeline then releases those holds); the registry then waits for every job's end.
        await self.relay.drain(s.drain_grace_seconds)
        await self.registry.drain(s.downstream_timeout_seconds * 2)
        await self.close()

    async def close(self) -> None:
        await self.registry.close()
        await self.relay.close()
        if self.grpc_server is not None:
            await self.grpc_server.stop(1.0)
        if self.relay_server is not None:
            await self.relay_server.stop(1.0)
        if self.runner is not None:
            await self.runner.cleanup()
        for channel in (self.billing_channel, self.moderation_channel):
            with contextlib.suppress(Exception):
                await channel.close()


def _bound_port(site: web.TCPSite, asked: int) -> int:
    server = site._server  # aiohttp keeps the asyncio server here
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return asked


async def serve(settings: Settings | None = None) -> None:
    settings = settings or settings_mod.load(Settings, PREFIX)
    logs.configure("gateway", settings.log_level)
    async with stop_signals() as stop:
        gateway = Gateway(settings)
        addresses = await gateway.start()
        log.info("gateway listening", extra=addresses)
        announce_ready("gateway", **addresses)
        await stop.wait()
        await gateway.drain()
    log.info("gateway stopped")
