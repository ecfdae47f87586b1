"""The jobs this replica accepted (their origin): queued as tickets, dispatched, retried, ended once.

A job waits in the network queue as a :class:`~talos_gateway.relay.queue.Ticket`. When a
replica claims the ticket for one of its nodes (this one in-process, or another through a
carry) the job is dispatched and its handle stands for that attempt. When an attempt does not
deliver, the job goes back to the front of its account's queue, at most ``max_attempts`` times
for attempts that count; a refusal (busy, unsupported, handed back) does not count.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from talos_common.errors import TalosError
from talos_gateway.config import Settings
from talos_gateway.relay.attempts import AttemptEnd, Outcome
from talos_gateway.relay.contract import Finished, Progress, Queued, RelayEvent, RenderSpec, Started
from talos_gateway.relay.metrics import RelayMetrics
from talos_gateway.relay.queue import Ticket
from talos_gateway.relay.states import JobState, advance
from talos_gateway.relay.timing import attempt_time_limit, work_units
from talos_gateway.relay.validate import PIL_FORMATS

log = logging.getLogger("talos_gateway.relay")


class Handle(Protocol):
    """The origin's hold on a job's current attempt, wherever it runs."""

    @property
    def node_id(self) -> str: ...
    def cancel(self) -> None: ...


class QueuePort(Protocol):
    """What the jobs ask of the network queue."""

    def push(self, ticket: Ticket, *, front: bool) -> None: ...
    def remove(self, ticket: Ticket) -> None: ...
    def queue_length(self) -> int: ...
    def retry_after(self) -> float: ...
    def changed(self) -> None: ...


@dataclass(frozen=True)
class Identity:
    replica_id: str
    peer: Callable[[], str]  # where this replica's PeerService listens ("" without a network)


@dataclass(eq=False)
class Job:
    job_id: str
    account_id: str
    spec: RenderSpec
    work: float  # steps × size relative to 1024²
    time_limit: float
    events: asyncio.Queue[RelayEvent | TalosError] = field(default_factory=asyncio.Queue)
    state: JobState = JobState.NEW
    attempts: int = 0
    faults: list[str] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)  # node ids this job failed on
    excluded: set[str] = field(default_factory=set)  # node ids that refused it for good
    handle: Handle | None = None
    ticket: Ticket | None = None
    enqueued_at: float = 0.0
    queue_timer: asyncio.TimerHandle | None = None
    orphan_since: float | None = None
    last_position: int = 0
    last_eta: float = -1.0

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.width, self.spec.height

    def move(self, new: JobState) -> None:
        self.state = advance(self.state, new, f"job {self.job_id}")


class Jobs:
    def __init__(self, settings: Settings, metrics: RelayMetrics, identity: Identity) -> None:
        self.settings = settings
        self.metrics = metrics
        self.identity = identity
        self.queue: QueuePort | None = None
        self.jobs: dict[str, Job] = {}
        self.idle = asyncio.Event()
        self.idle.set()
        self.closed = False

    def _port(self) -> QueuePort:
        assert self.queue is not None
        return self.queue

    # -- in --
    def submit(self, job_id: str, account_id: str, spec: RenderSpec) -> Job:
        if job_id in self.jobs:
            raise TalosError("internal", "duplicate job id")
        if spec.output_format not in PIL_FORMATS:
            raise TalosError("invalid_request", "unknown output format", field="output_format")
        port = self._port()
        if port.queue_length() >= self.settings.queue_bound:
            raise TalosError(
                "no_capacity",
                "every render node is busy and the queue is full",
                retry_after=port.retry_after(),
            )
        job = Job(
            job_id=job_id,
            account_id=account_id,
            spec=spec,
            work=work_units(spec.width, spec.height, spec.steps),
            time_limit=attempt_time_limit(self.settings, spec.width, spec.height, spec.steps),
        )
        self.jobs[job_id] = job
        self.idle.clear()
        self.enqueue(job)
        return job

    def enqueue(self, job: Job, *, front: bool = False) -> None:
        job.move(JobState.QUEUED)
        job.handle = None
        job.enqueued_at = time.monotonic()
        job.orphan_since = None
        job.last_position = 0
        job.ticket = Ticket(
            job_id=job.job_id,
            account_id=job.account_id,
            width=job.spec.width,
            height=job.spec.height,
            work=job.work,
            origin=self.identity.replica_id,
            origin_peer=self.identity.peer(),
            secret=secrets.token_urlsafe(12),
            excluded=frozenset(job.excluded),
            avoid=frozenset(job.tried),
        )
        if job.queue_timer is not None:
            job.queue_timer.cancel()
        job.queue_timer = asyncio.get_running_loop().call_later(
            self.settings.queue_timeout_seconds, self.on_queue_timeout, job
        )
        self._port().push(job.ticket, front=front)

    def push_refused(self, job_id: str) -> None:
        """The network queue was full when the ticket arrived there."""
        job = self.jobs.get(job_id)
        if job is not None and job.state is JobState.QUEUED:
            job.ticket = None  # it never entered the queue
            self.fail(
                job,
                TalosError(
                    "no_capacity",
                    "every render node is busy and the queue is full",
                    retry_after=self._port().retry_after(),
                ),
                "queue_full",
            )

    # -- claims and attempts --
    def claim(self, job_id: str, secret: str) -> Job | None:
        """The job behind a claimed ticket, if it still waits for exactly that ticket."""
        job = self.jobs.get(job_id)
        if job is None or job.state is not JobState.QUEUED or job.ticket is None:
            return None
        if not secrets.compare_digest(job.ticket.secret, secret):
            return None
        return job

    def dispatched(self, job: Job, handle: Handle) -> None:
        if job.queue_timer is not None:
            job.queue_timer.cancel()
            job.queue_timer = None
        job.move(JobState.DISPATCHED)
        job.ticket = None  # the claim took it out of the queue
        job.attempts += 1
        job.handle = handle
        self.metrics.dispatch_seconds.observe(time.monotonic() - job.enqueued_at)

    def current(self, job: Job, handle: Handle) -> bool:
        return job.handle is handle and job.state is JobState.DISPATCHED

    def started(self, job: Job, handle: Handle, node_id: str) -> None:
        if self.current(job, handle):
            job.events.put_nowait(Started(node_id))

    def progress(self, job: Job, handle: Handle, event: Progress) -> None:
        if self.current(job, handle):
            job.events.put_nowait(event)

    def finished(self, job: Job, handle: Handle, result: Finished) -> None:
        if not self.current(job, handle):
            return  # cancelled or drained meanwhile
        self.end(job, "finished")
        job.events.put_nowait(result)

    def attempt_ended(self, job: Job, handle: Handle, end: AttemptEnd) -> None:
        """An attempt did not deliver: retry the job, or give up after max_attempts."""
        if not self.current(job, handle):
            return
        if end.outcome is not Outcome.FAILED:
            job.attempts -= 1  # a refusal is not an attempt
            if end.outcome is not Outcome.BUSY:
                job.excluded.add(end.node_id)
            self._requeue(job, end.outcome.value)
            return
        job.faults.append(end.reason)
        job.tried.add(end.node_id)
        if job.attempts >= self.settings.max_attempts:
            if all(f in ("timeout", "accept_timeout") for f in job.faults):
                error = TalosError("timeout", f"the image took too long on {job.attempts} render nodes")
            else:
                error = TalosError("internal", f"rendering failed on {job.attempts} render nodes")
            self.fail(job, error)
            return
        self._requeue(job, end.reason)

    def _requeue(self, job: Job, reason: str) -> None:
        self.metrics.requeues.labels(reason).inc()
        log.info("job re-queued", extra={"job_id": job.job_id, "reason": reason, "attempts": job.attempts})
        self.enqueue(job, front=True)

    # -- out --
    def abandon(self, job: Job) -> None:
        """The consumer went away (client cancelled or disconnected): stop the job everywhere."""
        if job.handle is not None:
            job.handle.cancel()
        self.end(job, "cancelled")
        log.info("job cancelled", extra={"job_id": job.job_id})

    def forget(self, job: Job) -> None:
        if self.jobs.get(job.job_id) is job:
            del self.jobs[job.job_id]
        if not self.jobs:
            self.idle.set()

    def end(self, job: Job, outcome: str) -> None:
        if job.state is JobState.QUEUED and job.ticket is not None:
            self._port().remove(job.ticket)
        job.ticket = None
        if job.queue_timer is not None:
            job.queue_timer.cancel()
            job.queue_timer = None
        job.move(JobState.DONE)
        job.handle = None
        self.metrics.jobs.labels(outcome).inc()
        self._port().changed()

    def fail(self, job: Job, error: TalosError, outcome: str = "failed") -> None:
        if job.state is JobState.DONE:
            return
        if job.handle is not None:
            job.handle.cancel()
        self.end(job, outcome)
        job.events.put_nowait(error)
        log.info("job failed", extra={"job_id": job.job_id, "code": error.code, "attempts": job.attempts})

    def fail_all(self, error: TalosError) -> None:
        for job in list(self.jobs.values()):
            self.fail(job, error, "drained")

    def on_queue_timeout(self, job: Job) -> None:
        job.queue_timer = None
        if job.state is not JobState.QUEUED:
            return
        self.fail(
            job,
            TalosError(
                "no_capacity",
                "no render node became free in time; try again",
                retry_after=self._port().retry_after(),
            ),
            "queue_timeout",
        )

    def queued(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.state is JobState.QUEUED]

    def publish_position(self, job: Job, position: int, eta: float) -> None:
        if position != job.last_position or abs(eta - job.last_eta) >= 1.0:
            job.last_position = position
            job.last_eta = eta
            job.events.put_nowait(Queued(position, eta))
