"""The relay of one gateway replica: the pieces, wired, behind the pipeline's and the servicer's calls.

- :mod:`~talos_gateway.relay.nodes`: connected nodes, records, health, quarantine;
  :mod:`~talos_gateway.relay.placement`: choosing a node;
- :mod:`~talos_gateway.relay.attempts`: one job on one node, its timers, the node's messages;
  :mod:`~talos_gateway.relay.checks`: the result check off the loop;
- :mod:`~talos_gateway.relay.origin`: the jobs this replica accepted, retries, the end of each;
- :mod:`~talos_gateway.relay.queue` (in memory) or :mod:`~talos_gateway.relay.redisqueue`
  (shared by replicas): the fair queue of tickets; :mod:`~talos_gateway.relay.dispatch` moves them;
- :mod:`~talos_gateway.relay.capacity`: what the whole network can run, positions and ETAs;
- :mod:`~talos_gateway.relay.network` and :mod:`~talos_gateway.relay.peer`: replicas sharing
  nodes and queue; :mod:`~talos_gateway.relay.revocation`: revoked node tokens;
- :mod:`~talos_gateway.relay.sweeper`: silent nodes, jobs no node could run.

Every state change is a plain (non-async) method on the gateway's event loop, so no two
changes interleave. Without ``redis_url`` the relay is one replica with the queue in memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from talos.relay.v1 import relay_pb2
from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay.attempts import NodeWork
from talos_gateway.relay.capacity import Capacity
from talos_gateway.relay.checks import ResultChecks
from talos_gateway.relay.contract import Finished, RelayEvent, RenderSpec
from talos_gateway.relay.dispatch import Dispatcher
from talos_gateway.relay.metrics import RelayMetrics
from talos_gateway.relay.nodes import Close, NodeBook, NodeConn, NodeInfo
from talos_gateway.relay.origin import Identity, Jobs
from talos_gateway.relay.queue import MemoryQueue, TicketQueue
from talos_gateway.relay.revocation import ActiveNodes, Revocation
from talos_gateway.relay.states import JobState
from talos_gateway.relay.sweeper import Sweeper
from talos_gateway.relay.timing import wait_event

log = logging.getLogger("talos_gateway.relay")

AuthenticateNode = Callable[[str], Awaitable[str]]
SHUTTING_DOWN = "the gateway is shutting down; try again"
_SEQ = itertools.count()


class Relay:
    """Implements :class:`talos_gateway.relay.contract.RelayPort` for one gateway replica.

    ``authenticate_node(token) -> node_id`` resolves a node token (the gateway passes one that
    calls billing.AuthenticateNode with a deadline). It raises :class:`TalosError`: codes
    ``invalid_api_key``, ``not_found`` or ``invalid_request`` mean a bad token (the node is
    refused with UNAUTHENTICATED); anything else means billing could not answer (UNAVAILABLE).
    ``active_nodes(node_ids) -> active ids`` (billing.ActiveNodes), when given, is asked every
    ``node_revocation_check_seconds`` about the connected nodes; the others are disconnected.
    """

    def __init__(
        self,
        settings: Settings,
        authenticate_node: AuthenticateNode,
        active_nodes: ActiveNodes | None = None,
    ) -> None:
        self.settings = settings
        self._authenticate_node = authenticate_node
        self.replica_id = settings.replica_id or "gw-" + secrets.token_hex(5)
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        self.metrics = RelayMetrics(
            self.metrics_registry,
            nodes_connected=lambda: len(self.book.conns),
            nodes_idle=lambda: len(self.book.placement.available),
            nodes_quarantined=lambda: self.book.quarantined_count(),
            queue_length=lambda: self.dispatcher.queue_length(),
            jobs_running=lambda: self.work.running,
        )
        self.book = NodeBook(settings, self.metrics, on_change=lambda: self.dispatcher.node_changed())
        self.checks = ResultChecks(settings, self.metrics)
        self.work = NodeWork(settings, self.book, self.checks)
        self.capacity = Capacity(self.book)
        self.network: Any = None
        queue: TicketQueue = MemoryQueue()
        if settings.redis_url:
            from talos_gateway.relay.network import Network  # only a network needs Redis

            self.network = Network(self)
            queue = self.network.queue
        identity = Identity(self.replica_id, self._peer_address)
        self.jobs = Jobs(settings, self.metrics, identity)
        self.dispatcher = Dispatcher(
            settings, identity, queue, self.book, self.work, self.jobs, self.capacity
        )
        self.jobs.queue = self.dispatcher
        self.sweeper = Sweeper(
            settings, self.book, self.jobs, self.capacity, self.detach, self.dispatcher.wake
        )
        self.revocation = Revocation(settings, self.book, active_nodes, self.detach) if active_nodes else None
        self._draining = False
        self._closed = False
        self._started = False

    def _peer_address(self) -> str:
        return self.network.peer_address if self.network is not None else ""

    # ------------------------------------------------------------------ public: the pipeline
    def admit(self, account_id: str) -> None:
        """Raises ``no_capacity`` (with retry_after) when a job now could not even be queued."""
        if self._draining or self._closed:
            raise TalosError("unavailable", SHUTTING_DOWN, retry_after=5)
        if not self.capacity.any_healthy():
            raise TalosError(
                "no_capacity",
                "no render node is available right now; try again shortly",
                retry_after=max(1.0, self.settings.heartbeat_seconds),
            )
        dispatcher = self.dispatcher
        if dispatcher.queue_length() >= self.settings.queue_bound:
            raise TalosError(
                "no_capacity",
                "every render node is busy and the queue is full",
                retry_after=dispatcher.retry_after(),
            )
        if dispatcher.queued_for(account_id) >= self.settings.queue_bound_per_account:
            raise TalosError(
                "no_capacity",
                "too many of your images are already waiting",
                retry_after=dispatcher.retry_after(),
            )

    async def run(self, job_id: str, account_id: str, spec: RenderSpec) -> AsyncIterator[RelayEvent]:
        """Queues, dispatches and retries one job; yields Queued/Started/Progress, then Finished.

        A re-queued job yields Queued and Started again (on its new node) and its Progress
        starts again from step 1. Closing the iterator early cancels the job on its node.
        """
        if self._draining or self._closed:
            raise TalosError("unavailable", SHUTTING_DOWN, retry_after=5)
        self.start()
        job = self.jobs.submit(job_id, account_id, spec)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, TalosError):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            if job.state is not JobState.DONE:
                self.jobs.abandon(job)
            self.jobs.forget(job)

    def status(self) -> dict[str, Any]:
        """For /readyz: nodes connected, idle, quarantined and jobs queued in the whole network
        (one replica's, without a network); jobs running on this replica's nodes."""
        counts = self.capacity.counts()
        return {
            **counts,
            "queue_length": self.dispatcher.queue_length(),
            "jobs_running": self.work.running,
            "draining": self._draining,
            "network": self.network is not None,
            "replica_id": self.replica_id,
            "local_nodes_connected": len(self.book.conns),
            "local_nodes_idle": len(self.book.placement.available),
        }

    async def drain(self, grace: float | None = None) -> None:
        """Stops admitting, lets jobs finish within ``grace`` seconds, fails the rest, closes.

        Jobs still unfinished at the deadline raise ``TalosError("unavailable")`` from their
        ``run()`` iterators (the pipeline releases their holds) and are cancelled on their nodes.
        Node streams are then ended with UNAVAILABLE, so nodes move to another replica.
        """
        grace = self.settings.drain_grace_seconds if grace is None else grace
        self._draining = True
        self.dispatcher.draining = True
        log.info("relay draining", extra={"jobs": len(self.jobs.jobs), "grace_seconds": grace})
        if self.network is not None:
            self.network.draining()
        await wait_event(self.jobs.idle, max(0.0, grace))
        self.jobs.fail_all(TalosError("unavailable", SHUTTING_DOWN, retry_after=5))
        await self.close()

    async def close(self) -> None:
        """Fails whatever is left, ends every node stream and stops the background work."""
        if self._closed:
            return
        self._draining = True
        self._closed = True
        self.jobs.fail_all(TalosError("unavailable", SHUTTING_DOWN, retry_after=5))
        self.book.closed = True
        for conn in list(self.book.conns.values()):
            self.detach(conn, "relay closing", Close(grpc.StatusCode.UNAVAILABLE, "relay shutting down"))
        await self.dispatcher.close()
        await self.sweeper.close()
        if self.revocation is not None:
            await self.revocation.close()
        if self.network is not None:
            await self.network.close()
        self.checks.close()

    def start(self) -> None:
        """Starts the background work (dispatcher, sweeper, revocation checks); needs a running loop."""
        if self._started or self._closed:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self.book.loop = loop
        self.dispatcher.start()
        self.sweeper.start()
        if self.revocation is not None:
            self.revocation.start()

    async def open(self) -> None:
        """Joins the network (with ``redis_url``: Redis, the peer server, the registry), then starts."""
        if self.network is not None:
            await self.network.open()
            await self.dispatcher.step()  # the network's nodes are known before the first request
        self.start()

    @property
    def peer_address(self) -> str:
        """host:port other replicas fetch this one's jobs at ("" without a network)."""
        return self._peer_address()

    # ------------------------------------------------------------------ public: the servicer
    async def authenticate(self, token: str) -> str:
        return await asyncio.wait_for(
            self._authenticate_node(token), timeout=self.settings.downstream_timeout_seconds + 1
        )

    async def recall(self, node_id: str) -> None:
        """Loads a node's record (speed, faults, quarantine) from the network before it attaches."""
        if self.network is not None:
            await self.network.recall(node_id)

    def attach(self, node_id: str, hello: relay_pb2.Hello, peer: str = "") -> NodeConn:
        """Registers a node's new stream (replacing an older one of the same node id)."""
        if self._closed:
            raise TalosError("unavailable", "relay shutting down")
        self.start()
        info = NodeInfo.from_hello(hello)
        old = self.book.conns.get(node_id)
        if old is not None:
            self.detach(
                old, "replaced by a new stream", Close(grpc.StatusCode.ABORTED, "replaced by a new stream")
            )
        record = self.book.record_for(node_id, info.seconds_per_step)
        conn = NodeConn(seq=next(_SEQ), record=record, info=info, peer=peer)
        self.book.add(conn)
        log.info(
            "node connected",
            extra={
                "node_id": node_id,
                "model": info.model,
                "device": info.device,
                "concurrency": info.concurrency,
                "sizes": sorted(f"{w}x{h}" for w, h in info.sizes),
                "nodes": len(self.book.conns),
            },
        )
        self.dispatcher.node_changed()
        if self.network is not None:
            self.network.nodes_changed()
        return conn

    def detach(self, conn: NodeConn, reason: str, close: Close | None = None) -> None:
        """The stream ended (or is being ended): its jobs go back to the queue."""
        if conn.closed:
            return
        conn.closed = True
        self.book.remove(conn)
        lost = len(conn.attempts)
        self.work.lost(conn)
        conn.outbox.put_nowait(close or Close(None, reason))
        log.info("node disconnected", extra={"node_id": conn.node_id, "reason": reason, "jobs_lost": lost})
        self.dispatcher.node_changed()
        if self.network is not None:
            self.network.nodes_changed()

    def on_message(self, conn: NodeConn, msg: relay_pb2.NodeMessage) -> None:
        """One message from a node's stream (untrusted)."""
        self.work.on_message(conn, msg)
