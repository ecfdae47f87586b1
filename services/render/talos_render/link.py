"""The node's side of the relay link (talos.relay.v1.RelayService/Connect).

The node dials out: one long-lived stream per relay address. The relay name is resolved
periodically and may give several addresses (one per gateway replica); each gets its own
stream, and a node busy with a job refuses more from any of them (JobRejected "busy").

Per stream: Hello first, Welcome back, a Heartbeat every ``heartbeat_seconds``; RenderJob →
JobAccepted or JobRejected at once, then JobProgress per step and exactly one JobResult or
JobFailed; CancelJob stops the job within one step (JobFailed "cancelled"). A stream that
breaks is re-dialled with capped exponential back-off and jitter, so the node outlives its
relay restarting. Jobs of a broken stream are cancelled: the relay re-queues them elsewhere.
The jobs themselves (which to take, running them, cancels) are :mod:`talos_render.node_jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import grpc

from talos.relay.v1 import relay_pb2, relay_pb2_grpc
from talos_common import server as common_server
from talos_common import tls
from talos_common.logs import redact
from talos_render import config
from talos_render.config import Settings
from talos_render.engine import Engine
from talos_render.metrics import Metrics
from talos_render.node_jobs import NodeJobs
from talos_render.outbound import Outbound

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * common_server.MiB
DEFAULT_HEARTBEAT_SECONDS = 10


def split_host_port(address: str) -> tuple[str, int]:
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":"))
    host, _, port = address.rpartition(":")
    if not host:
        raise ValueError(f"relay address {address!r} is not HOST:PORT")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Backoff:
    """Capped exponential back-off with equal jitter."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = max(0.01, minimum)
        self.maximum = max(self.minimum, maximum)
        self._current = self.minimum

    def reset(self) -> None:
        self._current = self.minimum

    def next(self) -> float:
        current = self._current
        self._current = min(self.maximum, current * 2)
        return current / 2 + random.uniform(0, current / 2)


@dataclass(eq=False)
class Stream:
    target: str
    outbound: Outbound
    call: grpc.aio.StreamStreamCall | None = None
    node_id: str = ""
    welcomed: bool = False


class RelayLink:
    """Keeps the node's streams to every relay address and runs the jobs they send."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        model_name: str,
        device: str,
        version: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        # Told to the relay as its number of slots for this node; the engine batches them.
        self.concurrency = config.concurrency(settings, engine.model.device.type)
        self.hello = relay_pb2.Hello(
            model=model_name,
            sizes=list(settings.sizes),
            concurrency=self.concurrency,
            device=device,
            version=version,
            seconds_per_step=float(engine.seconds_per_step),
        )
        self.jobs = NodeJobs(settings, engine, self.metrics, self.concurrency, self._notify)
        # The name each resolved address was found under: TLS verifies that name, not the address.
        self._server_names: dict[str, str] = {}
        self._streams: set[Stream] = set()
        self._connections: dict[str, asyncio.Task[None]] = {}
        self._retired: set[str] = set()
        # Set once shutdown closes the streams: a stream that ends then is not redialled, but
        # nothing is cancelled until ``_stopping``, so the last messages reach the relay.
        self._closing = False
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()

    # -- what tests and the node ask ----------------------------------------------------------
    @property
    def active_jobs(self) -> int:
        return len(self.jobs.active)

    def connected(self) -> list[str]:
        return sorted(s.target for s in self._streams if s.welcomed)

    async def wait_connected(self, count: int = 1, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while len(self.connected()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} relay stream(s) after {within:.0f}s")
            await self._wait_changed(deadline - time.monotonic())

    async def _wait_changed(self, seconds: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(0.01, seconds))

    def _notify(self) -> None:
        self._changed.set()

    # -- addresses ---------------------------------------------------------------------------
    async def resolve(self) -> list[str]:
        """Every address of every relay named in the settings (loopback duplicates folded)."""
        loop = asyncio.get_running_loop()
        targets: list[str] = []
        for item in self.settings.relay.split(","):
            if not item.strip():
                continue
            host, port = split_host_port(item)
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("cannot resolve the relay", extra={"relay": item, "error": str(exc)})
                targets += [t for t in self._connections if t.endswith(f":{port}")]
                continue
            addresses: list[str] = []
            for info in infos:
                address = str(info[4][0])
                if address not in addresses:
                    addresses.append(address)
            # "localhost" gives ::1 and 127.0.0.1: one relay, not two replicas.
            if len(addresses) > 1 and all(ipaddress.ip_address(a).is_loopback for a in addresses):
                addresses = addresses[:1]
            for address in addresses:
                target = join_host_port(address, port)
                self._server_names[target] = host
                targets.append(target)
        return list(dict.fromkeys(targets))

    def _channel(self, target: str, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        """TLS to anything but loopback (or whenever a CA file is given); plaintext only if told."""
        name = self._server_names.get(target, split_host_port(target)[0])
        settings = self.settings
        plaintext = settings.insecure or (
            settings.ca_file is None and tls.is_loopback(target) and tls.is_loopback(name)
        )
        if plaintext:
            return grpc.aio.insecure_channel(target, options=options)
        credentials = tls.channel_credentials(settings.ca_file)
        return grpc.aio.secure_channel(
            target, credentials, options=[*options, ("grpc.ssl_target_name_override", name)]
        )

    async def run(self) -> None:
        """Dials every relay address and keeps the set current until :meth:`shutdown`."""
        try:
            while not self._stopping.is_set():
                try:
                    targets = await self.resolve()
                except ValueError as exc:
                    log.error("bad relay setting", extra={"error": str(exc)})
                    targets = []
                for target in targets:
                    self._retired.discard(target)
                    task = self._connections.get(target)
                    if task is None or task.done():
                        self._connections[target] = asyncio.create_task(self._connection(target))
                for target in set(self._connections) - set(targets):
                    if target not in self._retired:
                        log.info("relay address gone; retiring its stream", extra={"relay": target})
                        self._retired.add(target)
                self._close_retired_idle_streams()
                wait = (
                    self.settings.resolve_every_seconds
                    if targets
                    else min(5.0, self.settings.resolve_every_seconds)
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), max(0.05, wait))
        finally:
            for task in self._connections.values():
                task.cancel()
            await asyncio.gather(*self._connections.values(), return_exceptions=True)

    def _close_retired_idle_streams(self) -> None:
        for stream in list(self._streams):
            if stream.target in self._retired and not self.jobs.holds(stream):
                stream.outbound.close()

    # -- one stream per address ----------------------------------------------------------------
    async def _connection(self, target: str) -> None:
        backoff = Backoff(self.settings.reconnect_min_seconds, self.settings.reconnect_max_seconds)
        while not self._stopping.is_set() and not self._closing and target not in self._retired:
            try:
                welcomed = await self._session(target)
            except Exception:  # a bug must not end the node's link for good
                log.exception("relay stream crashed", extra={"relay": target})
                welcomed = False
            if self._stopping.is_set() or self._closing or target in self._retired:
                break
            if welcomed:
                backoff.reset()
            delay = backoff.next()
            log.info("reconnecting to the relay", extra={"relay": target, "in_seconds": round(delay, 2)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        if self._connections.get(target) is asyncio.current_task():
            del self._connections[target]

    async def _session(self, target: str) -> bool:
        """One Connect stream, from dial to end. True when the relay welcomed the node."""
        loop = asyncio.get_running_loop()
        stream = Stream(target=target, outbound=Outbound(self.hello, loop))
        options = (
            common_server.message_size_options(MAX_MESSAGE_BYTES) + common_server.KEEPALIVE_CLIENT_OPTIONS
        )
        heartbeat: asyncio.Task[None] | None = None
        channel = self._channel(target, options)
        try:
            stub = relay_pb2_grpc.RelayServiceStub(channel)
            call = stub.Connect(
                stream.outbound.messages(),
                metadata=(("authorization", f"Bearer {self.settings.token}"),),
            )
            stream.call = call
            self._streams.add(stream)
            async for message in call:
                kind = message.WhichOneof("msg")
                if kind == "welcome":
                    stream.welcomed = True
                    stream.node_id = message.welcome.node_id
                    seconds = message.welcome.heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS
                    heartbeat = asyncio.create_task(self._heartbeat(stream, seconds))
                    self.metrics.relay_streams.inc()
                    log.info(
                        "relay welcomed the node",
                        extra={"relay": target, "node_id": stream.node_id, "heartbeat_seconds": seconds},
                    )
                    self._notify()
                elif kind == "job":
                    self.jobs.on_job(stream, message.job)
                elif kind == "cancel":
                    self.jobs.on_cancel(stream, message.cancel.job_id)
            log.info("relay ended the stream", extra={"relay": target})
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                log.error(
                    "the relay refused the node token",
                    extra={"relay": target, "token": redact(self.settings.token), "details": exc.details()},
                )
            elif not self._stopping.is_set():
                log.warning(
                    "relay stream failed",
                    extra={"relay": target, "code": exc.code().name, "details": exc.details()},
                )
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if stream.welcomed:
                self.metrics.relay_streams.dec()
            self._streams.discard(stream)
            stream.outbound.close()
            for job in self.jobs.on(stream):
                if not job.cancel.is_set():
                    # Nobody can receive this job's result now; the relay re-queues it.
                    job.cancel_reason = "stream_lost"
                    job.cancel.set()
            await channel.close(grace=None)
            self._notify()
        return stream.welcomed

    async def _heartbeat(self, stream: Stream, seconds: int) -> None:
        while True:
            await asyncio.sleep(max(1, seconds))
            beat = relay_pb2.Heartbeat(active_jobs=len(self.jobs.active))
            stream.outbound.send(relay_pb2.NodeMessage(heartbeat=beat))

    # -- shutdown ------------------------------------------------------------------------------
    async def shutdown(self, grace: float) -> None:
        """Stops taking jobs, lets the job in hand finish within ``grace`` seconds or hands it
        back (JobFailed "node_shutdown"), flushes every stream and closes them."""
        jobs = self.jobs
        jobs.draining = True
        deadline = time.monotonic() + grace
        if jobs.active:
            log.info("draining", extra={"active_jobs": len(jobs.active), "grace_seconds": grace})
        while jobs.active and time.monotonic() < deadline:
            await self._wait_changed(deadline - time.monotonic())
        for active in list(jobs.active.values()):
            active.cancel_reason = "node_shutdown"
            active.cancel.set()
        tasks = [a.task for a in jobs.active.values() if a.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        # Let the terminal messages reach the relays before the streams close.
        flushes = [asyncio.create_task(s.outbound.wait_idle()) for s in self._streams]
        if flushes:
            _, unflushed = await asyncio.wait(flushes, timeout=5)
            for task in unflushed:
                task.cancel()
        self._closing = True
        for stream in list(self._streams):
            stream.outbound.close()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections.values()), timeout=2)
            for stream in list(self._streams):
                if stream.call is not None:
                    stream.call.cancel()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._stopping.set()
