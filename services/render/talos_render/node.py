"""The render node process: load once, warm up, report ready, serve the relay, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import time

from talos_common import server as common_server
from talos_common.settings import load as load_settings
from talos_render import __version__, config, loading
from talos_render.acceleration import Acceleration
from talos_render.config import PREFIX, Settings, parse_size
from talos_render.engine import Engine
from talos_render.link import RelayLink
from talos_render.metrics import Metrics

log = logging.getLogger(__name__)

# The name the node's gRPC health service reports for itself (besides the overall "").
HEALTH_SERVICE = "talos.render.Node"


async def serve(settings: Settings | None = None, loaded: loading.LoadedModel | None = None) -> None:
    settings = settings or load_settings(Settings, PREFIX)
    if loaded is None:
        loaded = await asyncio.to_thread(loading.load, settings)
    metrics = Metrics(loaded.device)
    health_server, health = common_server.build_server(register=[], service_names=[HEALTH_SERVICE])
    health_port = common_server.bind(health_server, settings.health_host, settings.health_port)
    await health_server.start()
    await common_server.set_serving(health, [HEALTH_SERVICE], False)
    metrics_server, metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
    concurrency = config.concurrency(settings, loaded.device.type)
    # Engine() applies the CUDA fast path (fused QKV, channels-last, float8): torch work, off the
    # loop, so the health server started above keeps answering meanwhile.
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
    link: RelayLink | None = None
    link_task: asyncio.Task[None] | None = None
    try:
        async with common_server.stop_signals() as stop:
            started = time.perf_counter()
            sizes = [parse_size(s) for s in settings.sizes]
            seconds_per_step = await engine.warmup_async(sizes, settings.warmup_steps)
            metrics.seconds_per_step.set(seconds_per_step)
            log.info(
                "model ready",
                extra={
                    "model": loaded.name,
                    "device": loaded.describe_device(),
                    "dtype": str(loaded.dtype).removeprefix("torch."),
                    "load_seconds": round(loaded.load_seconds, 2),
                    "warmup_seconds": round(time.perf_counter() - started, 2),
                    "seconds_per_step": round(seconds_per_step, 4),
                    "concurrency": concurrency,
                    "max_batch": engine.max_batch,
                    **engine.report,
                },
            )
            link = RelayLink(
                settings,
                engine,
                model_name=loaded.name,
                device=loaded.describe_device(),
                version=__version__,
                metrics=metrics,
            )
            metrics.ready.set(1)
            await common_server.set_serving(health, [HEALTH_SERVICE], True)
            link_task = asyncio.create_task(link.run())
            common_server.announce_ready(
                "render",
                health=f"{settings.health_host}:{health_port}",
                metrics=f"{settings.metrics_host}:{metrics_port}",
                model=loaded.name,
                device=loaded.describe_device(),
            )
            await stop.wait()
            log.info("stop signal received; draining")
        await common_server.set_serving(health, [HEALTH_SERVICE], False)
        if link is not None:
            await link.shutdown(settings.shutdown_grace_seconds)
        if link_task is not None:
            await link_task
    finally:
        if link_task is not None and not link_task.done():
            link_task.cancel()
        metrics_server.shutdown()
        await health_server.stop(1)
        engine.close()
        log.info("render node stopped")
