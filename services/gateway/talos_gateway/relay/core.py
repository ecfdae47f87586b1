"""The relay's scheduler: connected nodes, the fair queue, attempts, retries and quarantine.

Everything here runs on the gateway's event loop and every state change is a plain (non-async)
method, so no two changes ever interleave: the servicer feeds node messages in with
:meth:`Relay.on_message`, :meth:`Relay.run` feeds jobs in, timers fire sync callbacks, and the
dispatcher (:meth:`Relay._pump`) runs once per loop turn after any change.

Nodes are untrusted. A node only ever sees the jobs sent down its own stream; a message about
any other job id is dropped and counted against it. A result is checked (size cap, real
decode in a worker thread, format, dimensions) before it becomes a :class:`Finished`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from talos.relay.v1 import relay_pb2
from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay.contract import Finished, Progress, Queued, RelayEvent, RenderSpec, Started
from talos_gateway.relay.fairqueue import FairQueue
from talos_gateway.relay.metrics import RelayMetrics
from talos_gateway.relay.validate import PIL_FORMATS, InvalidResult, check_image, check_preview

log = logging.getLogger("talos_gateway.relay")

AuthenticateNode = Callable[[str], Awaitable[str]]

# 1024x1024 is the reference size for a node's seconds per step.
REFERENCE_PIXELS = 1024 * 1024
MAX_NODE_CONCURRENCY = 16
MAX_SIZES = 16
# A job cancelled on a node keeps the node's slot until the node says it stopped, or this long.
CANCEL_GRACE_SECONDS = 5.0
# Job ids recently released from a node: late messages about them are dropped without a fault.
RECENT_JOBS_KEPT = 256
# Back-off after a node says it is busy (another replica gave it work): doubles up to the cap.
BUSY_BACKOFF_FIRST = 0.05
BUSY_BACKOFF_MAX = 1.0
# Node reasons in JobFailed that hand a job back without it being the node's fault.
HAND_BACK_REASONS = frozenset({"cancelled", "node_shutdown", "shutting_down", "shutdown", "draining"})
# Position and ETA updates are computed at most this often.
POSITIONS_EVERY = 0.1
# The sane range for a node's claimed or measured seconds per step at 1024x1024.
SPS_MIN, SPS_MAX, SPS_DEFAULT = 0.0005, 60.0, 1.0
EWMA_WEIGHT = 0.3


def parse_size(text: str) -> tuple[int, int] | None:
    parts = text.lower().strip().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    w, h = int(parts[0]), int(parts[1])
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        return None
    return w, h


def _clamp_sps(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        return SPS_DEFAULT
    return min(SPS_MAX, max(SPS_MIN, value))


@dataclass
class NodeInfo:
    """What a node said about itself in its Hello (clamped to sane values)."""

    model: str
    sizes: frozenset[tuple[int, int]]
    concurrency: int
    device: str
    version: str
    seconds_per_step: float

    @classmethod
    def from_hello(cls, hello: relay_pb2.Hello) -> NodeInfo:
        sizes = set()
        for text in list(hello.sizes)[:MAX_SIZES]:
            size = parse_size(text)
            if size is not None:
                sizes.add(size)
        if not sizes:
            raise TalosError("invalid_request", "Hello names no valid size (WIDTHxHEIGHT)")
        return cls(
            model=hello.model[:100],
            sizes=frozenset(sizes),
            concurrency=min(MAX_NODE_CONCURRENCY, max(1, hello.concurrency)),
            device=hello.device[:100],
            version=hello.version[:50],
            seconds_per_step=_clamp_sps(hello.seconds_per_step),
        )


@dataclass(eq=False)
class NodeRecord:
    """What the relay remembers about a node id across reconnects."""

    node_id: str
    ewma_sps: float
    consecutive_faults: int = 0
    quarantined_until: float = 0.0
    faults: int = 0
    jobs_done: int = 0


@dataclass(eq=False)
class Close:
    """Sent down a node's outbox to end its stream (with a status, or OK when code is None)."""

    code: grpc.StatusCode | None
    details: str


@dataclass(eq=False)
class NodeConn:
    """One open stream from one node."""

    seq: int
    record: NodeRecord
    info: NodeInfo
    peer: str
    outbox: asyncio.Queue[relay_pb2.RelayMessage | Close] = field(default_factory=asyncio.Queue)
    attempts: dict[str, Attempt] = field(default_factory=dict)
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    last_seen: float = field(default_factory=time.monotonic)
    connected_at: float = field(default_factory=time.monotonic)
    closed: bool = False
    busy_until: float = 0.0
    busy_streak: int = 0
    # Bumped on every change that matters to scheduling; stale heap entries are skipped.
    version: int = 0

    @property
    def node_id(self) -> str:
        return self.record.node_id

    def send(self, message: relay_pb2.RelayMessage) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)


@dataclass(eq=False)
class Attempt:
    job: Job
    conn: NodeConn
    sent_at: float
    expected_seconds: float
    state: str = "sent"  # sent → running → (released) | cancelling
    accepted_at: float = 0.0
    last_step: int = 0
    timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(eq=False)
class Job:
    job_id: str
    account_id: str
    spec: RenderSpec
    # Steps × megapixel factor: seconds per step (at 1024²) times this is the render time.
    work: float
    time_limit: float
    events: asyncio.Queue[RelayEvent | TalosError] = field(default_factory=asyncio.Queue)
    state: str = "new"  # queued | dispatched | done
    attempts: int = 0
    faults: list[str] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)  # node ids this job failed on
    excluded: set[str] = field(default_factory=set)  # node ids that refused it for good
    attempt: Attempt | None = None
    enqueued_at: float = 0.0
    queue_timer: asyncio.TimerHandle | None = None
    orphan_since: float | None = None
    last_position: int = 0
    last_eta: float = -1.0

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.width, self.spec.height


class Relay:
    """Implements :class:`talos_gateway.relay.contract.RelayPort` for one gateway replica.

    ``authenticate_node(token) -> node_id`` resolves a node token (the gateway passes one that
    calls billing.AuthenticateNode with a deadline). It raises :class:`TalosError`: codes
    ``invalid_api_key``, ``not_found`` or ``invalid_request`` mean a bad token (the node is
    refused with UNAUTHENTICATED); anything else means billing could not answer (UNAVAILABLE).
    """

    def __init__(self, settings: Settings, authenticate_node: AuthenticateNode) -> None:
        self.settings = settings
        self._authenticate_node = authenticate_node
        self._conns: dict[str, NodeConn] = {}  # node id → its current stream
        self._records: dict[str, NodeRecord] = {}
        self._available: set[NodeConn] = set()
        self._healthy: set[NodeConn] = set()
        self._heap: list[tuple[float, int, int, NodeConn]] = []
        self._seq = itertools.count()
        self._queue: FairQueue[Job] = FairQueue()
        self._jobs: dict[str, Job] = {}
        self._running = 0
        self._pump_scheduled = False
        self._positions_handle: asyncio.TimerHandle | None = None
        self._positions_at = 0.0
        self._draining = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay-validate")
        self._max_pixels = max(w * h for w, h in [(1024, 1024), (832, 1216), (1216, 832)]) * 4
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        self.metrics = RelayMetrics(
            self.metrics_registry,
            nodes_connected=lambda: len(self._conns),
            nodes_idle=lambda: len(self._available),
            nodes_quarantined=lambda: self._quarantined_count(),
            queue_length=lambda: len(self._queue),
            jobs_running=lambda: self._running,
        )

    # ------------------------------------------------------------------ public: the pipeline
    def admit(self, account_id: str) -> None:
        """Raises ``no_capacity`` (with retry_after) when a job now could not even be queued."""
        if self._draining or self._closed:
            raise TalosError("unavailable", "the gateway is shutting down; try again", retry_after=5)
        if not self._healthy:
            raise TalosError(
                "no_capacity",
                "no render node is available right now; try again shortly",
                retry_after=max(1.0, self.settings.heartbeat_seconds),
            )
        if len(self._queue) >= self.settings.queue_bound:
            raise TalosError(
                "no_capacity",
                "every render node is busy and the queue is full",
                retry_after=self._retry_after(),
            )
        if self._queue.count(account_id) >= self.settings.queue_bound_per_account:
            raise TalosError(
                "no_capacity", "too many of your images are already waiting", retry_after=self._retry_after()
            )

    async def run(self, job_id: str, account_id: str, spec: RenderSpec) -> AsyncIterator[RelayEvent]:
        """Queues, dispatches and retries one job; yields Queued/Started/Progress, then Finished.

        A re-queued job yields Queued and Started again (on its new node) and its Progress
        starts again from step 1. Closing the iterator early cancels the job on its node.
        """
        job = self._submit(job_id, account_id, spec)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, TalosError):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            if job.state != "done":
                self._abandon(job)
            self._forget(job)

    def status(self) -> dict[str, Any]:
        """For /readyz: nodes connected, idle (a free slot), quarantined; jobs queued and running."""
        return {
            "nodes_connected": len(self._conns),
            "nodes_idle": len(self._available),
            "nodes_quarantined": self._quarantined_count(),
            "queue_length": len(self._queue),
            "jobs_running": self._running,
            "draining": self._draining,
        }

    async def drain(self, grace: float | None = None) -> None:
        """Stops admitting, lets jobs finish within ``grace`` seconds, fails the rest, closes.

        Jobs still unfinished at the deadline raise ``TalosError("unavailable")`` from their
        ``run()`` iterators (the pipeline releases their holds) and are cancelled on their nodes.
        Node streams are then ended with UNAVAILABLE, so nodes move to another replica.
        """
        grace = self.settings.drain_grace_seconds if grace is None else grace
        self._draining = True
        log.info("relay draining", extra={"jobs": len(self._jobs), "grace_seconds": grace})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, grace))
        self._fail_all(TalosError("unavailable", "the gateway is shutting down; try again", retry_after=5))
        await self.close()

    async def close(self) -> None:
        """Fails whatever is left, ends every node stream and stops the background work."""
        if self._closed:
            return
        self._draining = True
        self._closed = True
        self._fail_all(TalosError("unavailable", "the gateway is shutting down; try again", retry_after=5))
        for conn in list(self._conns.values()):
            self.detach(conn, "relay closing", Close(grpc.StatusCode.UNAVAILABLE, "relay shutting down"))
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._positions_handle is not None:
            self._positions_handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def start(self) -> None:
        """Starts the background sweeper (silent nodes, queue positions); needs a running loop."""
        if self._sweeper is None and not self._closed:
            self._loop = asyncio.get_running_loop()
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="relay-sweeper")

    # ------------------------------------------------------------------ public: the servicer
    async def authenticate(self, token: str) -> str:
        return await asyncio.wait_for(
            self._authenticate_node(token), timeout=self.settings.downstream_timeout_seconds + 1
        )

    def attach(self, node_id: str, hello: relay_pb2.Hello, peer: str = "") -> NodeConn:
        """Registers a node's new stream (replacing an older one of the same node id)."""
        if self._closed:
            raise TalosError("unavailable", "relay shutting down")
        self.start()
        info = NodeInfo.from_hello(hello)
        old = self._conns.get(node_id)
        if old is not None:
            self.detach(
                old, "replaced by a new stream", Close(grpc.StatusCode.ABORTED, "replaced by a new stream")
            )
        record = self._records.get(node_id)
        if record is None:
            record = self._records[node_id] = NodeRecord(node_id, info.seconds_per_step)
        conn = NodeConn(seq=next(self._seq), record=record, info=info, peer=peer)
        self._conns[node_id] = conn
        self._refresh(conn)
        log.info(
            "node connected",
            extra={
                "node_id": node_id,
                "model": info.model,
                "device": info.device,
                "concurrency": info.concurrency,
                "sizes": sorted(f"{w}x{h}" for w, h in info.sizes),
                "nodes": len(self._conns),
            },
        )
        self._schedule_pump()
        return conn

    def detach(self, conn: NodeConn, reason: str, close: Close | None = None) -> None:
        """The stream ended (or is being ended): its jobs go back to the queue."""
        if conn.closed:
            return
        conn.closed = True
        if self._conns.get(conn.node_id) is conn:
            del self._conns[conn.node_id]
        self._available.discard(conn)
        self._healthy.discard(conn)
        conn.version += 1
        lost = 0
        for attempt in list(conn.attempts.values()):
            cancelling = attempt.state == "cancelling"
            self._release(attempt)
            if not cancelling:
                lost += 1
                self._attempt_failed(attempt, "disconnect", count_fault=False)
        if lost:
            self._fault_node(conn.record, "disconnect")
        conn.outbox.put_nowait(close or Close(None, reason))
        log.info("node disconnected", extra={"node_id": conn.node_id, "reason": reason, "jobs_lost": lost})
        self._schedule_pump()

    def on_message(self, conn: NodeConn, msg: relay_pb2.NodeMessage) -> None:
        """One message from a node's stream (untrusted)."""
        if conn.closed:
            return
        now = time.monotonic()
        conn.last_seen = now
        kind = msg.WhichOneof("msg")
        if kind == "heartbeat":
            if conn.busy_until > now and msg.heartbeat.active_jobs < conn.info.concurrency:
                conn.busy_until = 0.0
                self._refresh(conn)
                self._schedule_pump()
            return
        if kind is None or kind == "hello":
            return
        payload = getattr(msg, kind)
        job_id = payload.job_id
        attempt = conn.attempts.get(job_id)
        if attempt is None:
            if job_id not in conn.recent:
                # Not a job this node was given: it is probing or confused. Never routed anywhere.
                log.warning("node sent a message for a job it does not hold", extra={"node_id": conn.node_id})
                self._fault_node(conn.record, "foreign_job")
            return
        if kind == "accepted":
            self._on_accepted(attempt, now)
        elif kind == "progress":
            self._on_progress(attempt, payload, now)
        elif kind == "result":
            self._on_result(attempt, payload, now)
        elif kind == "failed":
            self._on_failed(attempt, payload.reason)
        elif kind == "rejected":
            self._on_rejected(attempt, payload.reason, now)

    # ------------------------------------------------------------------ jobs in
    def _submit(self, job_id: str, account_id: str, spec: RenderSpec) -> Job:
        if self._draining or self._closed:
            raise TalosError("unavailable", "the gateway is shutting down; try again", retry_after=5)
        if job_id in self._jobs:
            raise TalosError("internal", "duplicate job id")
        if spec.output_format not in PIL_FORMATS:
            raise TalosError("invalid_request", "unknown output format", field="output_format")
        if len(self._queue) >= self.settings.queue_bound:
            raise TalosError(
                "no_capacity",
                "every render node is busy and the queue is full",
                retry_after=self._retry_after(),
            )
        self.start()
        megapixels = spec.width * spec.height / 1e6
        job = Job(
            job_id=job_id,
            account_id=account_id,
            spec=spec,
            work=spec.steps * spec.width * spec.height / REFERENCE_PIXELS,
            time_limit=self.settings.job_timeout_base_seconds
            + self.settings.job_timeout_per_step_megapixel_seconds * spec.steps * megapixels,
        )
        self._jobs[job_id] = job
        self._idle.clear()
        self._enqueue(job)
        return job

    def _enqueue(self, job: Job, *, front: bool = False) -> None:
        assert self._loop is not None
        job.state = "queued"
        job.attempt = None
        job.enqueued_at = time.monotonic()
        job.orphan_since = None
        job.last_position = 0
        self._queue.push(job, front=front)
        if job.queue_timer is not None:
            job.queue_timer.cancel()
        job.queue_timer = self._loop.call_later(
            self.settings.queue_timeout_seconds, self._on_queue_timeout, job
        )
        self._schedule_pump()

    def _abandon(self, job: Job) -> None:
        """The consumer went away (client cancelled or disconnected): stop the job everywhere."""
        if job.state == "queued":
            self._queue.remove(job)
        attempt = job.attempt
        if attempt is not None and attempt.state in ("sent", "running"):
            self._cancel_on_node(attempt)
        self._end(job, "cancelled")
        log.info("job cancelled", extra={"job_id": job.job_id})

    def _forget(self, job: Job) -> None:
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]
        if not self._jobs:
            self._idle.set()

    def _end(self, job: Job, outcome: str) -> None:
        if job.state == "queued":
            self._queue.remove(job)
        if job.queue_timer is not None:
            job.queue_timer.cancel()
            job.queue_timer = None
        job.state = "done"
        job.attempt = None
        self.metrics.jobs.labels(outcome).inc()
        self._schedule_positions()

    def _fail(self, job: Job, error: TalosError, outcome: str = "failed") -> None:
        if job.state == "done":
            return
        attempt = job.attempt
        if attempt is not None and attempt.state in ("sent", "running"):
            self._cancel_on_node(attempt)
        self._end(job, outcome)
        job.events.put_nowait(error)
        log.info("job failed", extra={"job_id": job.job_id, "code": error.code, "attempts": job.attempts})

    def _fail_all(self, error: TalosError) -> None:
        for job in list(self._jobs.values()):
            self._fail(job, error, "drained")

    # ------------------------------------------------------------------ scheduling
    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and self._loop is not None and not self._closed:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._queue and self._available:
            self._queue.dispatch(self._try_place, lambda: bool(self._available))
        if self._queue:
            self._schedule_positions()

    def _try_place(self, job: Job) -> bool:
        conn = self._pick(job)
        if conn is None:
            return False
        self._dispatch(job, conn)
        return True

    def _node_key(self, conn: NodeConn) -> float:
        # Expected seconds per step at 1024², slowed by the jobs it already runs.
        return conn.record.ewma_sps * (1 + len(conn.attempts))

    def _is_healthy(self, conn: NodeConn, now: float) -> bool:
        return not conn.closed and conn.record.quarantined_until <= now

    def _refresh(self, conn: NodeConn) -> None:
        """Re-files a node after any change in its state (free slots, speed, health)."""
        now = time.monotonic()
        conn.version += 1
        if self._is_healthy(conn, now):
            self._healthy.add(conn)
        else:
            self._healthy.discard(conn)
        if (
            conn in self._healthy
            and len(conn.attempts) < conn.info.concurrency
            and conn.busy_until <= now
            and not self._closed
        ):
            self._available.add(conn)
            heapq.heappush(self._heap, (self._node_key(conn), next(self._seq), conn.version, conn))
            if len(self._heap) > 4 * len(self._conns) + 64:
                self._compact_heap()
        else:
            self._available.discard(conn)

    def _compact_heap(self) -> None:
        self._heap = [
            (self._node_key(c), next(self._seq), c.version, c) for c in self._available if not c.closed
        ]
        heapq.heapify(self._heap)

    def _pick(self, job: Job) -> NodeConn | None:
        """The available node expected to finish soonest, preferring nodes the job has not failed on."""
        heap = self._heap
        skipped: list[tuple[float, int, int, NodeConn]] = []
        fallback: tuple[float, int, int, NodeConn] | None = None
        chosen: NodeConn | None = None
        size = job.size
        while heap:
            entry = heapq.heappop(heap)
            conn = entry[3]
            if entry[2] != conn.version or conn not in self._available:
                continue  # stale
            if conn.node_id in job.excluded or size not in conn.info.sizes or job.job_id in conn.attempts:
                skipped.append(entry)
                continue
            if conn.node_id in job.tried:
                if fallback is None:
                    fallback = entry
                else:
                    skipped.append(entry)
                continue
            chosen = conn  # the dispatch re-files it
            break
        if chosen is None and fallback is not None:
            if self._untried_candidate_exists(job):
                skipped.append(fallback)
            else:
                chosen = fallback[3]
        elif fallback is not None:
            skipped.append(fallback)
        for entry in skipped:
            heapq.heappush(heap, entry)
        return chosen

    def _untried_candidate_exists(self, job: Job) -> bool:
        """A healthy node (maybe busy) that this job has not failed on and could run it."""
        for conn in self._healthy:
            if (
                conn.node_id not in job.tried
                and conn.node_id not in job.excluded
                and job.size in conn.info.sizes
            ):
                return True
        return False

    def _dispatch(self, job: Job, conn: NodeConn) -> None:
        assert self._loop is not None
        now = time.monotonic()
        if job.queue_timer is not None:
            job.queue_timer.cancel()
            job.queue_timer = None
        job.state = "dispatched"
        job.attempts += 1
        attempt = Attempt(job, conn, sent_at=now, expected_seconds=conn.record.ewma_sps * job.work)
        job.attempt = attempt
        conn.attempts[job.job_id] = attempt
        self._running += 1
        timeout = min(job.time_limit, self.settings.accept_timeout_seconds)
        attempt.timer = self._loop.call_later(timeout, self._on_attempt_timeout, attempt)
        spec = job.spec
        conn.send(
            relay_pb2.RelayMessage(
                job=relay_pb2.RenderJob(
                    job_id=job.job_id,
                    prompt=spec.prompt,
                    negative_prompt=spec.negative_prompt,
                    width=spec.width,
                    height=spec.height,
                    steps=spec.steps,
                    guidance=spec.guidance,
                    seed=spec.seed,
                    output_format=spec.output_format,
                    preview_every=self.settings.relay_preview_every,
                )
            )
        )
        self.metrics.dispatch_seconds.observe(now - job.enqueued_at)
        self._refresh(conn)

    def _release(self, attempt: Attempt) -> None:
        """Frees the node's slot for this attempt (the node is done with it, one way or another)."""
        conn = attempt.conn
        attempt.cancel_timer()
        if conn.attempts.get(attempt.job.job_id) is attempt:
            del conn.attempts[attempt.job.job_id]
            if attempt.state != "cancelling":
                self._running -= 1
            conn.recent[attempt.job.job_id] = None
            while len(conn.recent) > RECENT_JOBS_KEPT:
                conn.recent.popitem(last=False)
            if not conn.closed:
                self._refresh(conn)
                self._schedule_pump()

    def _cancel_on_node(self, attempt: Attempt) -> None:
        """Sends CancelJob; the slot stays taken until the node confirms or the grace runs out."""
        assert self._loop is not None
        conn = attempt.conn
        attempt.cancel_timer()
        if conn.closed or conn.attempts.get(attempt.job.job_id) is not attempt:
            return
        conn.send(relay_pb2.RelayMessage(cancel=relay_pb2.CancelJob(job_id=attempt.job.job_id)))
        attempt.state = "cancelling"
        self._running -= 1
        attempt.timer = self._loop.call_later(CANCEL_GRACE_SECONDS, self._release, attempt)

    # ------------------------------------------------------------------ node messages
    def _on_accepted(self, attempt: Attempt, now: float) -> None:
        if attempt.state != "sent":
            return
        assert self._loop is not None
        attempt.state = "running"
        attempt.accepted_at = now
        conn = attempt.conn
        conn.busy_streak = 0
        attempt.cancel_timer()
        attempt.timer = self._loop.call_at(
            attempt.sent_at + attempt.job.time_limit, self._on_attempt_timeout, attempt
        )
        attempt.job.events.put_nowait(Started(conn.node_id))

    def _on_progress(self, attempt: Attempt, progress: relay_pb2.JobProgress, now: float) -> None:
        if attempt.state == "sent":
            self._on_accepted(attempt, now)
        if attempt.state != "running":
            return
        total = attempt.job.spec.steps
        step = progress.step
        if not (attempt.last_step < step <= total):
            return  # out of order or out of range: ignored
        attempt.last_step = step
        preview = progress.preview_jpeg
        if preview and not check_preview(preview, max_bytes=self.settings.relay_max_preview_bytes):
            preview = b""
        attempt.job.events.put_nowait(Progress(step, total, preview))

    def _on_result(self, attempt: Attempt, result: relay_pb2.JobResult, now: float) -> None:
        if attempt.state == "cancelling":
            self._release(attempt)
            return
        if attempt.state == "sent":
            self._on_accepted(attempt, now)
        job = attempt.job
        spec = job.spec
        self._release(attempt)
        seconds = now - (attempt.accepted_at or attempt.sent_at)
        if result.output_format != spec.output_format:
            self._attempt_failed(attempt, "invalid_result")
            return
        if (result.width, result.height) != (spec.width, spec.height):
            self._attempt_failed(attempt, "invalid_result")
            return
        if len(result.image) > self.settings.max_image_bytes or not result.image:
            self._attempt_failed(attempt, "invalid_result")
            return
        attempt.state = "validating"
        task = asyncio.get_running_loop().create_task(self._validate(attempt, result.image, seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _validate(self, attempt: Attempt, image: bytes, seconds: float) -> None:
        job = attempt.job
        spec = job.spec
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
                    max_pixels=self._max_pixels,
                ),
            )
        except InvalidResult as exc:
            self.metrics.validation_seconds.observe(time.perf_counter() - started)
            log.warning(
                "node returned an invalid image",
                extra={"node_id": attempt.conn.node_id, "job_id": job.job_id, "reason": exc.reason},
            )
            if job.attempt is attempt and job.state == "dispatched":
                self._attempt_failed(attempt, "invalid_result")
            else:
                self._fault_node(attempt.conn.record, "invalid_result")
            return
        self.metrics.validation_seconds.observe(time.perf_counter() - started)
        record = attempt.conn.record
        record.consecutive_faults = 0
        record.jobs_done += 1
        if job.work > 0 and seconds > 0:
            sample = _clamp_sps(seconds / job.work)
            record.ewma_sps = (1 - EWMA_WEIGHT) * record.ewma_sps + EWMA_WEIGHT * sample
            current = self._conns.get(record.node_id)
            if current is not None:
                self._refresh(current)  # its rank in the heap follows its speed
        if job.attempt is not attempt or job.state != "dispatched":
            return  # cancelled or drained meanwhile
        self._end(job, "finished")
        job.events.put_nowait(
            Finished(
                image=image,
                width=spec.width,
                height=spec.height,
                output_format=spec.output_format,
                node_id=attempt.conn.node_id,
                render_seconds=round(seconds, 4),
            )
        )

    def _on_failed(self, attempt: Attempt, reason: str) -> None:
        if attempt.state == "cancelling":
            self._release(attempt)
            return
        self._release(attempt)
        if reason in HAND_BACK_REASONS:
            # The node handed the job back (it is shutting down): not its fault, not an attempt.
            job = attempt.job
            job.attempts -= 1
            job.excluded.add(attempt.conn.node_id)
            self._requeue(attempt, "handed_back")
            return
        self._attempt_failed(attempt, "job_failed")

    def _on_rejected(self, attempt: Attempt, reason: str, now: float) -> None:
        conn = attempt.conn
        if attempt.state != "sent":
            # Rejecting a job it already accepted is a failure of that job.
            self._on_failed(attempt, "rejected_late")
            return
        self._release(attempt)
        job = attempt.job
        job.attempts -= 1  # a refusal is not an attempt
        if reason == "busy":
            conn.busy_streak += 1
            backoff = min(BUSY_BACKOFF_MAX, BUSY_BACKOFF_FIRST * 2 ** (conn.busy_streak - 1))
            conn.busy_until = now + backoff
            self._refresh(conn)
            assert self._loop is not None
            self._loop.call_later(backoff, self._after_backoff, conn)
            self._requeue(attempt, "busy")
        else:
            job.excluded.add(conn.node_id)
            self._requeue(attempt, "rejected")

    def _after_backoff(self, conn: NodeConn) -> None:
        if not conn.closed:
            self._refresh(conn)
            self._schedule_pump()

    def _on_attempt_timeout(self, attempt: Attempt) -> None:
        attempt.timer = None
        job = attempt.job
        if job.attempt is not attempt or attempt.state not in ("sent", "running"):
            return
        reason = "accept_timeout" if attempt.state == "sent" else "timeout"
        log.warning("job timed out on a node", extra={"job_id": job.job_id, "node_id": attempt.conn.node_id})
        self._cancel_on_node(attempt)
        self._attempt_failed(attempt, reason, release=False)

    # ------------------------------------------------------------------ failures
    def _attempt_failed(
        self, attempt: Attempt, reason: str, *, count_fault: bool = True, release: bool = True
    ) -> None:
        """An attempt did not deliver: fault the node, then retry the job or give up."""
        if release and attempt.state != "cancelling":
            self._release(attempt)
        if count_fault:
            self._fault_node(attempt.conn.record, reason)
        job = attempt.job
        if job.attempt is not attempt or job.state != "dispatched":
            return
        job.faults.append(reason)
        job.tried.add(attempt.conn.node_id)
        if job.attempts >= self.settings.max_attempts:
            if all(f in ("timeout", "accept_timeout") for f in job.faults):
                error = TalosError("timeout", f"the image took too long on {job.attempts} render nodes")
            else:
                error = TalosError("internal", f"rendering failed on {job.attempts} render nodes")
            self._fail(job, error)
            return
        self._requeue(attempt, reason)

    def _requeue(self, attempt: Attempt, reason: str) -> None:
        job = attempt.job
        if job.attempt is not attempt or job.state != "dispatched":
            return
        self.metrics.requeues.labels(reason).inc()
        log.info("job re-queued", extra={"job_id": job.job_id, "reason": reason, "attempts": job.attempts})
        self._enqueue(job, front=True)

    def _fault_node(self, record: NodeRecord, reason: str) -> None:
        record.faults += 1
        record.consecutive_faults += 1
        self.metrics.node_faults.labels(reason).inc()
        if record.consecutive_faults < self.settings.quarantine_after_failures:
            return
        now = time.monotonic()
        record.consecutive_faults = 0
        record.quarantined_until = now + self.settings.quarantine_seconds
        self.metrics.quarantines.inc()
        log.warning(
            "node quarantined",
            extra={"node_id": record.node_id, "reason": reason, "seconds": self.settings.quarantine_seconds},
        )
        conn = self._conns.get(record.node_id)
        if conn is not None:
            self._refresh(conn)
        if self._loop is not None:
            self._loop.call_later(
                self.settings.quarantine_seconds + 0.01, self._after_quarantine, record.node_id
            )

    def _after_quarantine(self, node_id: str) -> None:
        conn = self._conns.get(node_id)
        if conn is not None:
            self._refresh(conn)
            self._schedule_pump()

    def _on_queue_timeout(self, job: Job) -> None:
        job.queue_timer = None
        if job.state != "queued":
            return
        self._fail(
            job,
            TalosError(
                "no_capacity",
                "no render node became free in time; try again",
                retry_after=self._retry_after(),
            ),
            "queue_timeout",
        )

    # ------------------------------------------------------------------ queue positions and ETAs
    def _schedule_positions(self) -> None:
        if self._positions_handle is not None or self._loop is None or self._closed:
            return
        delay = max(0.0, self._positions_at + POSITIONS_EVERY - time.monotonic())
        self._positions_handle = self._loop.call_later(delay, self._update_positions)

    def _mean_sps(self) -> float:
        if not self._healthy:
            return SPS_DEFAULT
        return sum(c.record.ewma_sps for c in self._healthy) / len(self._healthy)

    def _slot_free_times(self, limit: int, now: float) -> list[float]:
        """Seconds until each node slot frees (0 for a free one), the ``limit`` soonest."""
        times: list[float] = []
        for conn in self._healthy:
            free = conn.info.concurrency - len(conn.attempts)
            times.extend([max(0.0, conn.busy_until - now)] * max(0, free))
            for attempt in conn.attempts.values():
                times.append(max(0.0, attempt.sent_at + attempt.expected_seconds - now))
        return heapq.nsmallest(limit, times)

    def _update_positions(self) -> None:
        self._positions_handle = None
        if self._pump_scheduled:
            # Dispatch first: a job a free node is about to take must not be reported queued.
            self._pump()
        now = time.monotonic()
        self._positions_at = now
        if not self._queue:
            return
        mean_sps = self._mean_sps()
        slots = self._slot_free_times(len(self._queue), now)
        heapq.heapify(slots)
        for position, job in enumerate(self._queue.in_order(), start=1):
            duration = mean_sps * job.work
            if slots:
                start = heapq.heappop(slots)
                heapq.heappush(slots, start + duration)
            else:
                start = self.settings.queue_timeout_seconds
            eta = round(start + duration, 1)
            if position != job.last_position or abs(eta - job.last_eta) >= 1.0:
                job.last_position = position
                job.last_eta = eta
                job.events.put_nowait(Queued(position, eta))

    def _retry_after(self) -> float:
        slots = sum(c.info.concurrency for c in self._healthy) or 1
        wait = len(self._queue) / slots * self._mean_sps() * 30
        return float(min(60.0, max(1.0, wait)))

    def _quarantined_count(self) -> int:
        now = time.monotonic()
        return sum(1 for c in self._conns.values() if c.record.quarantined_until > now)

    # ------------------------------------------------------------------ the sweeper
    async def _sweep_forever(self) -> None:
        tick = min(1.0, max(0.05, self.settings.node_silence_seconds / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                self._sweep()
            except Exception:  # a bug here must not stop silence detection for good
                log.exception("relay sweep failed")

    def _sweep(self) -> None:
        now = time.monotonic()
        silence = self.settings.node_silence_seconds
        for conn in list(self._conns.values()):
            if now - conn.last_seen > silence:
                log.warning("node silent; dropping it", extra={"node_id": conn.node_id})
                self.detach(
                    conn, "silent", Close(grpc.StatusCode.UNAVAILABLE, "no message within the silence limit")
                )
        if self._queue:
            self._fail_orphans(now)
            self._schedule_positions()
            self._schedule_pump()

    def _fail_orphans(self, now: float) -> None:
        """Queued jobs that no connected healthy node could ever run fail after a short grace."""
        sizes: dict[tuple[int, int], set[str]] = {}
        for conn in self._healthy:
            for size in conn.info.sizes:
                sizes.setdefault(size, set()).add(conn.node_id)
        for job in list(self._queue):
            candidates = sizes.get(job.size, set()) - job.excluded
            if candidates:
                job.orphan_since = None
                continue
            if job.orphan_since is None:
                job.orphan_since = now
            elif now - job.orphan_since >= self.settings.no_node_grace_seconds:
                self._fail(
                    job,
                    TalosError(
                        "no_capacity", "no render node is available for this job; try again", retry_after=10
                    ),
                    "no_node",
                )
