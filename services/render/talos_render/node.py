"""The render node process: load once, warm up, report ready, serve the relay, drain on SIGTERM.

:func:`create_server` loads the model and binds health and metrics; :meth:`RenderNode.start`
warms up and dials the relay; :meth:`RenderNode.stop` drains.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

import grpc

from talos_common import server as common_server
from talos_common.server import PortInUse
from talos_common.settings import env_name
from talos_render import __version__, config, loading
from talos_render.acceleration import Acceleration
from talos_render.config import PREFIX, Settings, parse_size
from talos_render.engine import Engine
from talos_render.link import RelayLink
from talos_render.metrics import Metrics

log = logging.getLogger(__name__)

# The name the node's gRPC health service reports for itself (besides the overall "").
HEALTH_SERVICE = "talos.render.Node"


class RenderNode:
    """One node: its health server and metrics (bound), engine and relay link."""

    def __init__(
        self,
        settings: Settings,
        loaded: loading.LoadedModel,
        metrics: Metrics,
        engine: Engine,
        server: grpc.aio.Server,
        health: Any,
        port: int,
        metrics_server: Any,
        metrics_port: int,
    ) -> None:
        self.settings = settings
        self.loaded = loaded
        self.metrics = metrics
        self.engine = engine
        self.server = server
        self.health = health
        self.port = port
        self.metrics_server = metrics_server
        self.metrics_port = metrics_port
        self.link: RelayLink | None = None
        self.link_task: asyncio.Task[None] | None = None

    @property
    def addresses(self) -> dict[str, str]:
        s = self.settings
        return {
            "health": f"{s.health_host}:{self.port}",
            "metrics": f"{s.metrics_host}:{self.metrics_port}",
            "model": self.loaded.name,
            "device": self.loaded.describe_device(),
        }

    async def start(self) -> None:
        """Serves health (not serving yet), warms up every size, then dials the relay."""
        settings, loaded, engine = self.settings, self.loaded, self.engine
        await self.server.start()
        await common_server.set_serving(self.health, [HEALTH_SERVICE], False)
        started = time.perf_counter()
        sizes = [parse_size(s) for s in settings.sizes]
        seconds_per_step = await engine.warmup_async(sizes, settings.warmup_steps)
        self.metrics.seconds_per_step.set(seconds_per_step)
        log.info(
            "model ready",
            extra={
                "model": loaded.name,
                "device": loaded.describe_device(),
                "dtype": str(loaded.dtype).removeprefix("torch."),
                "load_seconds": round(loaded.load_seconds, 2),
                "warmup_seconds": round(time.perf_counter() - started, 2),
                "seconds_per_step": round(seconds_per_step, 4),
                "concurrency": config.concurrency(settings, loaded.device.type),
                "max_batch": engine.max_batch,
                **engine.report,
            },
        )
        self.link = RelayLink(
            settings,
            engine,
            model_name=loaded.name,
            device=loaded.describe_device(),
            version=__version__,
            metrics=self.metrics,
        )
        self.metrics.ready.set(1)
        await common_server.set_serving(self.health, [HEALTH_SERVICE], True)
        self.link_task = asyncio.create_task(self.link.run())

    async def stop(self) -> None:
        """Hands back or finishes the jobs in hand within the grace, then closes everything."""
        log.info("stop signal received; draining")
        try:
            await common_server.set_serving(self.health, [HEALTH_SERVICE], False)
            if self.link is not None:
                await self.link.shutdown(self.settings.shutdown_grace_seconds)
            if self.link_task is not None:
                await self.link_task
        finally:
            if self.link_task is not None and not self.link_task.done():
                self.link_task.cancel()
            self.metrics_server.shutdown()
            await self.server.stop(1)
            self.engine.close()
            log.info("render node stopped")


async def create_server(settings: Settings, loaded: loading.LoadedModel | None = None) -> RenderNode:
    """Loads the model (unless given), binds health and metrics, and builds the engine."""
    if loaded is None:
        loaded = await asyncio.to_thread(loading.load, settings)
    metrics = Metrics(loaded.device)
    server, health = common_server.build_server(register=[], service_names=[HEALTH_SERVICE])
    port = common_server.bind(
        server, settings.health_host, settings.health_port, env_name(PREFIX, "health_port")
    )
    try:
        metrics_server, metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
    except OSError as error:
        if error.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise PortInUse(
                env_name(PREFIX, "metrics_port"), settings.metrics_host, settings.metrics_port
            ) from None
        raise
    concurrency = config.concurrency(settings, loaded.device.type)
    # Engine() applies the CUDA fast path (fused QKV, channels-last, float8): torch work, off the
    # loop, so nothing else on it waits.
    engine = await asyncio.to_thread(
        Engine,
        loaded,
        preview_size=settings.preview_size,
        min_preview_every=settings.preview_every,
        max_batch=min(settings.max_batch, concurrency),
        batch_window_ms=settings.batch_window_ms if concurrency > 1 else 0.0,
        acceleration=Acceleration.from_settings(settings),
        preview_threads=settings.preview_threads,
        on_step=metrics.steps.inc,
    )
    return RenderNode(settings, loaded, metrics, engine, server, health, port, metrics_server, metrics_port)
