"""Checking a node's image off the event loop (a real decode takes milliseconds per megapixel)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from talos.api.v1 import contract
from talos_gateway.config import Settings
from talos_gateway.relay.contract import RenderSpec
from talos_gateway.relay.metrics import RelayMetrics
from talos_gateway.relay.validate import InvalidResult, check_image

# A bound checked before any pixel is decoded: four times the largest size the API offers (the
# exact size is checked after).
MAX_PIXELS = contract.MAX_PIXELS * 4


class ResultChecks:
    def __init__(self, settings: Settings, metrics: RelayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay-validate")
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, spec: RenderSpec, image: bytes, done: Callable[[str | None], None]) -> None:
        """Checks ``image`` against ``spec`` in a worker thread, then calls ``done(reason)`` on the
        loop: None when the image is good, else a short tag saying what is wrong with it."""
        task = asyncio.get_running_loop().create_task(self._check(spec, image, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, spec: RenderSpec, image: bytes, done: Callable[[str | None], None]) -> None:
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor,
                lambda: check_image(
                    image,
                    spec.output_format,
                    spec.width,
                    spec.height,
                    max_bytes=self.settings.max_image_bytes,
                    max_pixels=MAX_PIXELS,
                ),
            )
        except InvalidResult as exc:
            self.metrics.validation_seconds.observe(time.perf_counter() - started)
            done(exc.reason)
            return
        self.metrics.validation_seconds.observe(time.perf_counter() - started)
        done(None)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
