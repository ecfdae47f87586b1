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
from talos_common import server
from talos_common.service import main as run_service
from talos_common.settings import env_name

log = logging.getLogger("talos_billing")


@dataclass
class Billing:
    """The billing service: its gRPC server (bound), store and real address."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    store: Store
    settings: Settings
    sweeper: bool = True

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]', '') else host}:{self.port}"

    @property
    def addresses(self) -> dict[str, str]:
        return {"grpc": self.address}

    async def start(self) -> None:
        if self.sweeper:
            self.store.start_sweeper(self.settings.sweep_seconds)
        await self.server.start()
        await server.set_serving(self.health, [SERVICE_NAME], True)
        log.info(
            "billing ready",
            extra={
                "address": self.address,
                "database": describe(database_url(self.settings)),
                "price": self.settings.price,
                "hold_ttl_seconds": self.settings.hold_ttl_seconds,
            },
        )

    async def stop(self) -> None:
        """Refuses new calls, lets calls in flight finish, then closes the store."""
        log.info("draining")
        await server.set_serving(self.health, [SERVICE_NAME], False)
        await self.server.stop(self.settings.drain_grace_seconds)
        await self.store.close()
        log.info("stopped")


async def create_server(settings: Settings, *, clock: Clock = time.time, sweeper: bool = True) -> Billing:
    """Opens the store (migrating it) and binds the gRPC server; port 0 picks a free one."""
    store = await Store.open(settings, clock=clock)
    try:
        servicer = BillingServicer(store)
        grpc_server, health_servicer = server.build_server(
            register=[lambda s: billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, s)],
            service_names=[SERVICE_NAME],
        )
        port = server.bind(grpc_server, settings.host, settings.port, env_name(PREFIX, "port"))
    except BaseException:
        await store.close()
        raise
    return Billing(grpc_server, port, health_servicer, store, settings, sweeper)


async def start(settings: Settings, *, clock: Clock = time.time, sweeper: bool = True) -> Billing:
    """Creates and starts billing in this process (the tests' way in)."""
    billing = await create_server(settings, clock=clock, sweeper=sweeper)
    await billing.start()
    return billing


def main() -> None:
    run_service("billing", Settings, PREFIX, create_server)
