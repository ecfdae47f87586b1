"""Runs billing: the store, its expiry sweeper and the gRPC server, with a graceful drain."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from talos.billing.v1 import billing_pb2_grpc
from talos_billing.config import PREFIX, Settings
from talos_billing.db import database_url, describe
from talos_billing.servicer import SERVICE_NAME, BillingServicer
from talos_billing.store import Clock, Store
from talos_common import logs, server
from talos_common import settings as settings_module

log = logging.getLogger("talos_billing")


@dataclass
class Billing:
    """A running billing service: its server, store and real address."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    store: Store
    address: str
    drain_grace_seconds: float

    async def stop(self) -> None:
        """Refuses new calls, lets calls in flight finish, then closes the store."""
        await server.set_serving(self.health, [SERVICE_NAME], False)
        await self.server.stop(self.drain_grace_seconds)
        await self.store.close()


async def start(settings: Settings, *, clock: Clock = time.time, sweeper: bool = True) -> Billing:
    """Opens the store (migrating it), starts the sweeper and listens; port 0 picks a free one."""
    store = await Store.open(settings, clock=clock)
    try:
        if sweeper:
            store.start_sweeper(settings.sweep_seconds)
        servicer = BillingServicer(store)
        grpc_server, health_servicer = server.build_server(
            register=[lambda s: billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, s)],
            service_names=[SERVICE_NAME],
        )
        port = server.bind(grpc_server, settings.host, settings.port)
        await grpc_server.start()
        await server.set_serving(health_servicer, [SERVICE_NAME], True)
    except BaseException:
        await store.close()
        raise
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]", "") else settings.host
    return Billing(grpc_server, health_servicer, store, f"{host}:{port}", settings.drain_grace_seconds)


async def serve(settings: Settings | None = None) -> None:
    settings = settings or settings_module.load(Settings, PREFIX)
    logs.configure("billing", settings.log_level)  # keeps SQLAlchemy's per-statement lines out
    async with server.stop_signals() as stop:
        billing = await start(settings)
        log.info(
            "billing ready",
            extra={
                "address": billing.address,
                "database": describe(database_url(settings)),
                "price": settings.price,
                "hold_ttl_seconds": settings.hold_ttl_seconds,
            },
        )
        server.announce_ready("billing", grpc=billing.address)
        await stop.wait()
        log.info("draining")
        await billing.stop()
        log.info("stopped")
