"""The node's side of the relay link (talos.relay.v1.RelayService/Connect).

The node dials out: one long-lived stream per relay address. The relay name is resolved
periodically and may give several addresses (one per gateway replica); each gets its own
stream, and a node busy with a job refuses more from any of them (JobRejected "busy").

Per stream: Hello first, Welcome back, a Heartbeat every ``heartbeat_seconds``; RenderJob →
JobAccepted or JobRejected at once, then JobProgress per step and exactly one JobResult or
JobFailed; CancelJob stops the job within one step (JobFailed "cancelled"). A stream that
breaks is re-dialled with capped exponential back-off and jitter, so the node outlives its
relay restarting. Jobs of a broken stream are cancelled: the relay re-queues them elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from talos.relay.v1 import relay_pb2, relay_pb2_grpc
from talos_common import server as common_server
from talos_common import tls
from talos_common.logs import redact
from talos_render import config
from talos_render.config import Settings, parse_size
from talos_render.engine import FORMATS, Cancelled, Engine, RenderRequest
from talos_render.metrics import Metrics
from talos_render.outbound import JobSlot, Outbound

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * common_server.MiB
MAX_PROMPT_CHARS = 20_000
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


@dataclass(eq=False)
class ActiveJob:
    job_id: str
    stream: Stream
    slot: JobSlot
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "cancelled"
    started: bool = False
    task: asyncio.Task[None] | None = None


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
        self.sizes = [parse_size(s) for s in settings.sizes]
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
        self._active: dict[str, ActiveJob] = {}
        # The name each resolved address was found under: TLS verifies that name, not the address.
        self._server_names: dict[str, str] = {}
        self._streams: set[Stream] = set()
        self._connections: dict[str, asyncio.Task[None]] = {}
        self._retired: set[str] = set()
        self._draining = False
        # Set once shutdown closes the streams: a stream that ends then is not redialled, but
        # nothing is cancelled until ``_stopping``, so the last messages reach the relay.
        self._closing = False
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()

    # -- what tests and the node ask ----------------------------------------------------------
    @property
    def active_jobs(self) -> int:
        return len(self._active)

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
            if stream.target in self._retired and not any(j.stream is stream for j in self._active.values()):
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
                    self._on_job(stream, message.job)
                elif kind == "cancel":
                    self._on_cancel(stream, message.cancel.job_id)
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
            for job in list(self._active.values()):
                if job.stream is stream and not job.cancel.is_set():
                    # Nobody can receive this job's result now; the relay re-queues it.
                    job.cancel_reason = "stream_lost"
                    job.cancel.set()
            await channel.close(grace=None)
            self._notify()
        return stream.welcomed

    async def _heartbeat(self, stream: Stream, seconds: int) -> None:
        while True:
            await asyncio.sleep(max(1, seconds))
            beat = relay_pb2.Heartbeat(active_jobs=len(self._active))
            stream.outbound.send(relay_pb2.NodeMessage(heartbeat=beat))

    # -- jobs ----------------------------------------------------------------------------------
    def refusal(self, job: relay_pb2.RenderJob) -> str | None:
        """Why the node will not take ``job``: "unsupported" (never here) before "busy" (not now)."""
        if not job.job_id:
            return "unsupported"
        if (job.width, job.height) not in self.sizes:
            return "unsupported"
        if not 1 <= job.steps <= self.settings.max_steps:
            return "unsupported"
        if not math.isfinite(job.guidance) or not 1.0 <= job.guidance <= 30.0:
            return "unsupported"
        if (job.output_format.lower() or "png") not in FORMATS:
            return "unsupported"
        if len(job.prompt) + len(job.negative_prompt) > MAX_PROMPT_CHARS:
            return "unsupported"
        if self._draining or job.job_id in self._active or len(self._active) >= self.concurrency:
            return "busy"
        return None

    def _on_job(self, stream: Stream, job: relay_pb2.RenderJob) -> None:
        reason = self.refusal(job)
        if reason is not None:
            stream.outbound.send(
                relay_pb2.NodeMessage(rejected=relay_pb2.JobRejected(job_id=job.job_id, reason=reason))
            )
            self.metrics.jobs.labels(f"rejected_{reason}").inc()
            log.info("job rejected", extra={"job_id": job.job_id, "reason": reason, "relay": stream.target})
            return
        request = RenderRequest(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            width=job.width,
            height=job.height,
            steps=job.steps,
            guidance=job.guidance,
            seed=job.seed,
            output_format=job.output_format.lower() or "png",
            preview_every=job.preview_every,
            output_quality=min(100, job.output_quality),
        )
        active = ActiveJob(job_id=job.job_id, stream=stream, slot=stream.outbound.job(job.job_id))
        self._active[job.job_id] = active
        self.metrics.active_jobs.set(len(self._active))
        self.metrics.queue.inc()
        stream.outbound.send(relay_pb2.NodeMessage(accepted=relay_pb2.JobAccepted(job_id=job.job_id)))
        log.info(
            "job accepted",
            extra={
                "job_id": job.job_id,
                "relay": stream.target,
                "size": f"{job.width}x{job.height}",
                "steps": job.steps,
            },
        )
        active.task = asyncio.create_task(self._run_job(active, request))

    def _on_cancel(self, stream: Stream, job_id: str) -> None:
        active = self._active.get(job_id)
        if active is None or active.stream is not stream:
            log.info("cancel for a job not running here", extra={"job_id": job_id})
            return
        active.cancel_reason = "cancelled"
        active.cancel.set()
        log.info("job cancel requested", extra={"job_id": job_id})

    async def _run_job(self, active: ActiveJob, request: RenderRequest) -> None:
        started = time.perf_counter()
        outcome = "completed"
        slot = active.slot
        metrics = self.metrics

        def on_progress(step: int, total: int, preview: bytes) -> None:
            if not active.started:
                active.started = True
                metrics.queue.dec()
            slot.offer_progress(step, total, preview)

        try:
            output = await self.engine.render(request, on_progress, active.cancel)
            result = relay_pb2.JobResult(
                job_id=active.job_id,
                image=output.image,
                output_format=output.output_format,
                width=output.width,
                height=output.height,
                render_seconds=output.render_seconds,
            )
            slot.finish(relay_pb2.NodeMessage(result=result))
            if output.render_seconds > 0:
                metrics.steps_per_second.set(request.steps / output.render_seconds)
        except Cancelled:
            outcome = active.cancel_reason
        except torch.OutOfMemoryError:
            outcome = "out_of_memory"
            log.error("out of device memory", extra={"job_id": active.job_id})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            outcome = "error"
            log.exception("render failed", extra={"job_id": active.job_id})
        finally:
            if outcome != "completed":
                failed = relay_pb2.JobFailed(job_id=active.job_id, reason=outcome)
                slot.finish(relay_pb2.NodeMessage(failed=failed))
            if not active.started:
                metrics.queue.dec()
            self._active.pop(active.job_id, None)
            seconds = time.perf_counter() - started
            metrics.jobs.labels(outcome).inc()
            metrics.job_seconds.observe(seconds)
            metrics.active_jobs.set(len(self._active))
            log.info(
                "job finished",
                extra={
                    "job_id": active.job_id,
                    "outcome": outcome,
                    "seconds": round(seconds, 3),
                    "coalesced_progress": slot.coalesced,
                },
            )
            self._notify()

    # -- shutdown ------------------------------------------------------------------------------
    async def shutdown(self, grace: float) -> None:
        """Stops taking jobs, lets the job in hand finish within ``grace`` seconds or hands it
        back (JobFailed "node_shutdown"), flushes every stream and closes them."""
        self._draining = True
        deadline = time.monotonic() + grace
        if self._active:
            log.info("draining", extra={"active_jobs": len(self._active), "grace_seconds": grace})
        while self._active and time.monotonic() < deadline:
            await self._wait_changed(deadline - time.monotonic())
        for active in list(self._active.values()):
            active.cancel_reason = "node_shutdown"
            active.cancel.set()
        tasks = [a.task for a in self._active.values() if a.task is not None]
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
