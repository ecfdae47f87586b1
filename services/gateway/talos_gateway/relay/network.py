"""A replica's membership of a relay network: Redis, the registry, wake-ups, node records, peers.

Replicas sharing one Redis (``redis_url``) and one ``relay_network`` name share their nodes and
one fair queue. Each replica:

- registers itself (its peer address and its nodes: sizes, slots, speed, health, when each slot
  is expected to free) under a key that expires unless renewed every
  ``replica_heartbeat_seconds``, and at once when its nodes change: a replica that dies vanishes
  from the network by itself within ``replica_ttl_seconds``;
- listens for "a ticket waits" announcements, which wake its dispatcher;
- shares its nodes' records (speed, faults, quarantine), so a node that dials another replica
  brings its record along;
- serves the PeerService other replicas fetch its jobs from, and carries theirs.

Redis holds no prompt and no image, only tickets, registrations and node records; it must run
without persistence (``--save '' --appendonly no``) all the same, as nothing in it is meant to
outlive the replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import grpc
from redis.asyncio import Redis

from talos.relay.v1 import peer_pb2_grpc
from talos_common.server import bind, build_server
from talos_common.service import CannotStart
from talos_common.settings import env_name
from talos_gateway.config import PREFIX
from talos_gateway.relay.nodes import NodeRecord, size_text
from talos_gateway.relay.peer import SERVICE_NAME, Carrier, PeerServicer
from talos_gateway.relay.redisqueue import RedisQueue
from talos_gateway.relay.timing import stop_task, wait_event

if TYPE_CHECKING:
    from talos_gateway.relay.core import Relay

log = logging.getLogger("talos_gateway.relay")

# Node records outlive their streams this long in Redis (a quarantine at least).
RECORD_TTL_SECONDS = 24 * 3600
# Registrations are rewritten at most this often when nodes change in bursts.
REGISTER_GAP_SECONDS = 0.05
REDIS_TIMEOUT_SECONDS = 2.0
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def advertised_host(host: str) -> str:
    """An address other machines can reach this one at, when bound to every interface."""
    if host not in WILDCARD_HOSTS:
        return host
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


class Network:
    def __init__(self, relay: Relay) -> None:
        settings = relay.settings
        self.relay = relay
        self.settings = settings
        self.prefix = f"talos:{settings.relay_network}"
        self.redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        self.queue = RedisQueue(
            self.redis,
            self.prefix,
            relay.replica_id,
            bound=settings.queue_bound,
            ticket_ttl_seconds=settings.queue_timeout_seconds + 60,
        )
        self.carrier = Carrier(relay)
        self.peer_address = ""
        self._server: grpc.aio.Server | None = None
        self._dirty: asyncio.Event | None = None
        self._records: dict[str, NodeRecord] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._draining = False

    @property
    def _key(self) -> str:
        return f"{self.prefix}:r:{self.relay.replica_id}"

    async def open(self) -> None:
        """Reaches Redis, opens the peer server, registers, and starts listening for tickets."""
        try:
            await self.redis.ping()
        except Exception as exc:
            # Named by host and port only: the URL may carry a password.
            where = self.redis.connection_pool.connection_kwargs
            raise CannotStart(
                f"cannot reach the Redis of {env_name(PREFIX, 'redis_url')} at "
                f"{where.get('host')}:{where.get('port')}: {type(exc).__name__}"
            ) from None
        settings = self.settings
        server, _health = build_server(
            [lambda s: peer_pb2_grpc.add_PeerServiceServicer_to_server(PeerServicer(self.relay), s)],
            [SERVICE_NAME],
            max_message_bytes=settings.relay_max_message_bytes,
        )
        port = bind(server, settings.host, settings.peer_port, env_name(PREFIX, "peer_port"))
        await server.start()
        self._server = server
        self.peer_address = settings.peer_advertise or f"{advertised_host(settings.host)}:{port}"
        self.relay.dispatcher.carrier = self.carrier
        self.relay.book.on_record = self._record_changed
        self._dirty = asyncio.Event()
        await self._register()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="relay-network-heartbeat"),
            asyncio.create_task(self._listen(), name="relay-network-wake"),
        ]
        log.info(
            "joined the relay network",
            extra={
                "network": settings.relay_network,
                "replica_id": self.relay.replica_id,
                "peer": self.peer_address,
            },
        )

    def nodes_changed(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    def draining(self) -> None:
        """From now on this replica claims only its own jobs and offers no free node to others."""
        self._draining = True
        self.queue.only_own = True
        self.nodes_changed()

    # -- the registry --
    def registration(self) -> dict[str, Any]:
        now_mono, now_wall = time.monotonic(), time.time()
        nodes = []
        book = self.relay.book
        for conn in book.conns.values():
            healthy = conn in book.healthy
            free_at = [now_wall + max(0.0, conn.busy_until - now_mono)] * conn.free_slots
            free_at += [
                now_wall + max(0.0, a.sent_at + a.expected_seconds - now_mono) for a in conn.attempts.values()
            ]
            idle = conn in book.placement.available and not self._draining
            nodes.append(
                {
                    "id": conn.node_id,
                    "sizes": sorted(size_text(s) for s in conn.info.sizes),
                    "slots": conn.info.concurrency,
                    "sps": round(conn.record.ewma_sps, 6),
                    "healthy": healthy,
                    "free": conn.free_slots if idle else 0,
                    "free_at": [round(t, 3) for t in free_at],
                }
            )
        return {"peer": self.peer_address, "draining": self._draining, "nodes": nodes}

    async def _register(self) -> None:
        records, self._records = self._records, {}
        ttl_ms = int(self.settings.replica_ttl_seconds * 1000)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self._key, json.dumps(self.registration(), separators=(",", ":")), px=ttl_ms)
                pipe.sadd(f"{self.prefix}:replicas", self.relay.replica_id)
                for record in records.values():
                    self._save(pipe, record)
                await pipe.execute()
        except BaseException:
            self._records = {**records, **self._records}
            raise

    async def _heartbeat(self) -> None:
        assert self._dirty is not None
        failing = False
        while True:
            await wait_event(self._dirty, self.settings.replica_heartbeat_seconds)
            self._dirty.clear()
            try:
                await self._register()
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failing:
                    log.exception("cannot renew this replica's registration")
                failing = True
            else:
                failing = False
            await asyncio.sleep(REGISTER_GAP_SECONDS)

    async def _listen(self) -> None:
        """Wakes the dispatcher whenever another replica announces a waiting ticket."""
        channel = f"{self.prefix}:wake"
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while True:
                    message = await pubsub.get_message(timeout=self.settings.claim_every_seconds)
                    if message is not None:
                        self.relay.dispatcher.node_changed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "lost the network's announcements; resubscribing", extra={"error": type(exc).__name__}
                )
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # -- node records --
    def _record_changed(self, record: NodeRecord) -> None:
        self._records[record.node_id] = record
        self.nodes_changed()

    def _save(self, pipe: Any, record: NodeRecord) -> None:
        key = f"{self.prefix}:node:{record.node_id}"
        remaining = record.quarantined_until - time.monotonic()
        pipe.hset(
            key,
            mapping={
                "sps": record.ewma_sps,
                "faults": record.faults,
                "consecutive": record.consecutive_faults,
                "quarantined_until": time.time() + remaining if remaining > 0 else 0,
                "jobs_done": record.jobs_done,
            },
        )
        pipe.expire(key, RECORD_TTL_SECONDS)

    async def recall(self, node_id: str) -> None:
        """Loads a node's shared record before it attaches (best effort: Redis may be away)."""
        try:
            raw = await self.redis.hgetall(f"{self.prefix}:node:{node_id}")
        except Exception as exc:
            log.warning(
                "cannot load a node's record", extra={"node_id": node_id, "error": type(exc).__name__}
            )
            return
        if not raw:
            return
        fields = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        book = self.relay.book
        record = book.record_for(node_id, fields.get("sps", 1.0))
        record.ewma_sps = fields.get("sps", record.ewma_sps)
        record.faults = max(record.faults, int(fields.get("faults", 0)))
        record.consecutive_faults = int(fields.get("consecutive", 0))
        record.jobs_done = max(record.jobs_done, int(fields.get("jobs_done", 0)))
        remaining = fields.get("quarantined_until", 0.0) - time.time()
        if remaining > 0:
            record.quarantined_until = max(record.quarantined_until, time.monotonic() + remaining)
            asyncio.get_running_loop().call_later(remaining + 0.01, book.after_quarantine, node_id)

    # -- leaving --
    async def close(self) -> None:
        for task in self._tasks:
            await stop_task(task)
        await self.carrier.close()
        with contextlib.suppress(Exception):
            async with self.redis.pipeline(transaction=False) as pipe:
                for record in self._records.values():
                    self._save(pipe, record)
                pipe.delete(self._key)
                pipe.srem(f"{self.prefix}:replicas", self.relay.replica_id)
                await pipe.execute()
        if self._server is not None:
            await self._server.stop(1.0)
        with contextlib.suppress(Exception):
            await self.redis.aclose()
