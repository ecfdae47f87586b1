"""The mesh of the API contract tests, in this process: what ``LocalMesh`` offers, without processes.

Billing (SQLite), moderation (the test rules, the real classifier) and the gateway run as real
gRPC and HTTP servers on port 0 in one background thread with its own event loop, so the tests
(sync or async, each with its loop) talk to them over real sockets as a client would. The
render node is a test peer that answers every job with a valid image after a short delay per
step. Tests about the processes themselves (start-up, logs, the real render node) use the
multi-process ``process_mesh`` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from talos_dev.mesh import LocalMesh
from talos_moderation.classifier import NsfwClassifier

from .stack import Stack, start_stack

T = TypeVar("T")
# Long enough that a 60-step job can be cancelled halfway, short enough to keep tests quick.
STEP_DELAY_SECONDS = 0.02


class InProcessMesh(LocalMesh):
    """``LocalMesh``'s helpers (accounts, balances, readiness) over an in-process stack."""

    def __init__(self, data_dir: Path, rules: Path) -> None:
        super().__init__(data_dir)
        self.rules = rules
        self.stack: Stack | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="in-process-mesh", daemon=True)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self, nodes: int = 1) -> InProcessMesh:
        self._thread.start()
        classifier = NsfwClassifier(threads=1, device="cpu")
        self.stack = self._run(start_stack(self.data_dir, self.rules, classifier, relay_preview_every=5))
        for _ in range(nodes):
            self._run(self.stack.node(step_delay=STEP_DELAY_SECONDS))
        return self

    def stop(self) -> None:
        if self.stack is not None:
            self._run(self.stack.stop())
            self.stack = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _stack(self) -> Stack:
        assert self.stack is not None, "the in-process mesh is not started"
        return self.stack

    @property
    def billing_addr(self) -> str:
        return self._stack().billing.address

    @property
    def moderation_addr(self) -> str:
        return self._stack().moderation.addresses["grpc"]

    @property
    def http_url(self) -> str:
        return self._stack().http_url

    @property
    def grpc_addr(self) -> str:
        return self._stack().grpc_addr

    @property
    def relay_addr(self) -> str:
        return self._stack().relay_addr
