"""Revoked node tokens end their streams within seconds, on every replica.

A node's token is checked when its stream opens. Revoking it in billing must also end streams
already open, so every replica asks billing (ActiveNodes) every
``node_revocation_check_seconds`` which of its connected node ids are still active, and ends
the streams of the others with PERMISSION_DENIED. Their reconnects are refused as any unknown
token is. When billing cannot answer, streams stay open (the next check tries again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc

from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay.nodes import Close, NodeBook, NodeConn
from talos_gateway.relay.timing import stop_task

log = logging.getLogger("talos_gateway.relay")

ActiveNodes = Callable[[list[str]], Awaitable[Sequence[str]]]
REVOKED = "node token revoked"


class Revocation:
    def __init__(
        self,
        settings: Settings,
        book: NodeBook,
        active_nodes: ActiveNodes,
        detach: Callable[[NodeConn, str, Close], None],
    ) -> None:
        self.settings = settings
        self.book = book
        self.active_nodes = active_nodes
        self.detach = detach
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._forever(), name="relay-revocation")

    async def close(self) -> None:
        await stop_task(self._task)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.node_revocation_check_seconds)
            try:
                await self.check()
            except (TalosError, TimeoutError) as exc:
                log.warning("cannot check node tokens now", extra={"code": getattr(exc, "code", "timeout")})
            except Exception:
                log.exception("node token check failed")

    async def check(self) -> int:
        """Ends the streams of connected nodes billing no longer knows; returns how many."""
        node_ids = sorted(self.book.conns)
        if not node_ids:
            return 0
        active = set(
            await asyncio.wait_for(
                self.active_nodes(node_ids), timeout=self.settings.downstream_timeout_seconds + 1
            )
        )
        ended = 0
        for node_id in node_ids:
            conn = self.book.conns.get(node_id)
            if node_id in active or conn is None:
                continue
            log.warning("node token revoked; ending its stream", extra={"node_id": node_id})
            self.detach(conn, "token revoked", Close(grpc.StatusCode.PERMISSION_DENIED, REVOKED))
            ended += 1
        return ended
