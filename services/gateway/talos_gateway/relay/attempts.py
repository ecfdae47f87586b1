"""Attempts: one job on one of this replica's nodes, its timers, and what the node says about it.

Everything here is a plain (non-async) method run on the gateway's event loop, so no two
changes interleave. The node's messages come in through :meth:`NodeWork.on_message`. A node
only ever sees the jobs sent down its own stream; a message about any other job id is dropped
and counted against it. A result is checked (size cap, format, dimensions, a real decode in a
worker thread) before it becomes a :class:`Finished`.

An attempt reports to its :class:`JobSide`: the job itself when this replica accepted it, or
the carry back to the replica that did. The node's faults and quarantine stay here, with the
node; whether the job is tried again is the job's business.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from talos.relay.v1 import relay_pb2
from talos_gateway.config import Settings
from talos_gateway.relay.checks import ResultChecks
from talos_gateway.relay.contract import Finished, Progress, RenderSpec
from talos_gateway.relay.nodes import NodeBook, NodeConn
from talos_gateway.relay.states import ON_NODE, AttemptState, advance
from talos_gateway.relay.timing import attempt_time_limit, work_units
from talos_gateway.relay.validate import check_preview
from talos_gateway.relay.wire import render_job

log = logging.getLogger("talos_gateway.relay")

# A job cancelled on a node keeps the node's slot until the node says it stopped, or this long.
CANCEL_GRACE_SECONDS = 5.0
# Back-off after a node says it is busy (another replica gave it work): doubles up to the cap.
BUSY_BACKOFF_FIRST = 0.05
BUSY_BACKOFF_MAX = 1.0
# Node reasons in JobFailed that hand a job back without it being the node's fault.
HAND_BACK_REASONS = frozenset({"cancelled", "node_shutdown", "shutting_down", "shutdown", "draining"})


class Outcome(enum.Enum):
    FAILED = "failed"  # counts as an attempt; the node is avoided next time
    BUSY = "busy"  # the node had no slot after all: not an attempt
    REJECTED = "rejected"  # the node will never run it: not an attempt, that node is excluded
    HANDED_BACK = "handed_back"  # the node is shutting down: not an attempt, that node is excluded


@dataclass(frozen=True)
class AttemptEnd:
    outcome: Outcome
    reason: str
    node_id: str


class JobSide(Protocol):
    """Whoever owns the job an attempt runs (the job here, or the carry to its origin)."""

    @property
    def live(self) -> bool: ...  # this attempt is still the job's current one
    def started(self, node_id: str) -> None: ...
    def progress(self, event: Progress) -> None: ...
    def finished(self, result: Finished) -> None: ...
    def ended(self, end: AttemptEnd) -> None: ...


@dataclass(eq=False)
class Attempt:
    job_id: str
    side: JobSide
    conn: NodeConn
    state: AttemptState = AttemptState.FETCHING
    spec: RenderSpec | None = None  # known once fetched
    work: float = 0.0
    time_limit: float = 0.0
    sent_at: float = 0.0
    expected_seconds: float = 0.0
    accepted_at: float = 0.0
    last_step: int = 0
    timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class NodeWork:
    """The attempts on this replica's nodes."""

    def __init__(self, settings: Settings, book: NodeBook, checks: ResultChecks) -> None:
        self.settings = settings
        self.book = book
        self.checks = checks
        self.metrics = book.metrics
        self.running = 0  # attempts a node holds that are not being cancelled
        self.loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop

    def _move(self, attempt: Attempt, new: AttemptState) -> None:
        was_on_node = attempt.state in ON_NODE
        attempt.state = advance(attempt.state, new, f"attempt {attempt.job_id}")
        self.running += (new in ON_NODE) - was_on_node

    # -- out to the node --
    def open(self, job_id: str, side: JobSide, conn: NodeConn) -> Attempt:
        """Takes a slot on ``conn`` for a job whose RenderSpec may still be on its way."""
        attempt = Attempt(job_id, side, conn)
        conn.attempts[job_id] = attempt
        self.book.refresh(conn)
        return attempt

    def send(self, attempt: Attempt, spec: RenderSpec) -> None:
        """Sends the job down the node's stream; the node must answer within the accept timeout."""
        conn = attempt.conn
        if attempt.state is not AttemptState.FETCHING or conn.attempts.get(attempt.job_id) is not attempt:
            return  # the node went away while the job was fetched
        now = time.monotonic()
        attempt.spec = spec
        attempt.work = work_units(spec.width, spec.height, spec.steps)
        attempt.time_limit = attempt_time_limit(self.settings, spec.width, spec.height, spec.steps)
        attempt.sent_at = now
        attempt.expected_seconds = conn.record.ewma_sps * attempt.work
        self._move(attempt, AttemptState.SENT)
        timeout = min(attempt.time_limit, self.settings.accept_timeout_seconds)
        attempt.timer = self.loop().call_later(timeout, self._on_timeout, attempt)
        conn.send(
            relay_pb2.RelayMessage(job=render_job(attempt.job_id, spec, self.settings.relay_preview_every))
        )
        self.book.refresh(conn)

    def release(self, attempt: Attempt) -> None:
        """Frees the node's slot for this attempt (the node is done with it, one way or another)."""
        conn = attempt.conn
        attempt.cancel_timer()
        if attempt.state not in (AttemptState.ENDED, AttemptState.VALIDATING):
            self._move(attempt, AttemptState.ENDED)
        if conn.attempts.get(attempt.job_id) is attempt:
            del conn.attempts[attempt.job_id]
            conn.remember(attempt.job_id)
            self.book.refresh_and_notify(conn)

    def cancel_on_node(self, attempt: Attempt) -> None:
        """Sends CancelJob; the slot stays taken until the node confirms or the grace runs out."""
        conn = attempt.conn
        if attempt.state is AttemptState.FETCHING:
            self.release(attempt)
            return
        if attempt.state not in ON_NODE or conn.closed or conn.attempts.get(attempt.job_id) is not attempt:
            return
        attempt.cancel_timer()
        conn.send(relay_pb2.RelayMessage(cancel=relay_pb2.CancelJob(job_id=attempt.job_id)))
        self._move(attempt, AttemptState.CANCELLING)
        attempt.timer = self.loop().call_later(CANCEL_GRACE_SECONDS, self.release, attempt)

    def lost(self, conn: NodeConn) -> None:
        """The node's stream ended: every attempt on it fails (those being cancelled just end)."""
        lost = 0
        for attempt in list(conn.attempts.values()):
            state = attempt.state
            self.release(attempt)
            if state is AttemptState.CANCELLING:
                continue
            lost += state in ON_NODE
            self._failed(attempt, "disconnect", count_fault=False)
        if lost:
            self.book.fault(conn.record, "disconnect")

    # -- in from the node --
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
                self.book.refresh_and_notify(conn)
            return
        if kind is None or kind == "hello":
            return
        payload = getattr(msg, kind)
        attempt = conn.attempts.get(payload.job_id)
        if attempt is None or attempt.state is AttemptState.FETCHING:
            if payload.job_id not in conn.recent:
                # Not a job this node was given: it is probing or confused. Never routed anywhere.
                log.warning("node sent a message for a job it does not hold", extra={"node_id": conn.node_id})
                self.book.fault(conn.record, "foreign_job")
            return
        if kind == "accepted":
            self._on_accepted(attempt, now)
        elif kind == "progress":
            self._on_progress(attempt, payload)
        elif kind == "result":
            self._on_result(attempt, payload, now)
        elif kind == "failed":
            self._on_failed(attempt, payload.reason)
        elif kind == "rejected":
            self._on_rejected(attempt, payload.reason, now)

    def _on_accepted(self, attempt: Attempt, now: float) -> None:
        if attempt.state is not AttemptState.SENT:
            return
        self._move(attempt, AttemptState.RUNNING)
        attempt.accepted_at = now
        attempt.conn.busy_streak = 0
        attempt.cancel_timer()
        attempt.timer = self.loop().call_at(attempt.sent_at + attempt.time_limit, self._on_timeout, attempt)
        attempt.side.started(attempt.conn.node_id)

    def _on_progress(self, attempt: Attempt, progress: relay_pb2.JobProgress) -> None:
        if attempt.state is AttemptState.SENT:
            self._on_accepted(attempt, time.monotonic())
        if attempt.state is not AttemptState.RUNNING:
            return
        assert attempt.spec is not None
        total = attempt.spec.steps
        step = progress.step
        if not (attempt.last_step < step <= total):
            return  # out of order or out of range: ignored
        attempt.last_step = step
        preview = progress.preview_jpeg
        if preview and not check_preview(preview, max_bytes=self.settings.relay_max_preview_bytes):
            preview = b""
        attempt.side.progress(Progress(step, total, preview))

    def _on_result(self, attempt: Attempt, result: relay_pb2.JobResult, now: float) -> None:
        if attempt.state is AttemptState.CANCELLING:
            self.release(attempt)
            return
        if attempt.state is AttemptState.SENT:
            self._on_accepted(attempt, now)
        spec = attempt.spec
        assert spec is not None
        seconds = now - (attempt.accepted_at or attempt.sent_at)
        if (
            result.output_format != spec.output_format
            or (result.width, result.height) != (spec.width, spec.height)
            or len(result.image) > self.settings.max_image_bytes
            or not result.image
        ):
            self._failed(attempt, "invalid_result")
            return
        self._move(attempt, AttemptState.VALIDATING)
        self.release(attempt)  # the node is done with it: its slot frees while the image is checked
        self.checks.start(spec, result.image, lambda bad: self._checked(attempt, result.image, seconds, bad))

    def _checked(self, attempt: Attempt, image: bytes, seconds: float, bad: str | None) -> None:
        self._move(attempt, AttemptState.ENDED)
        record = attempt.conn.record
        if bad is not None:
            log.warning(
                "node returned an invalid image",
                extra={"node_id": record.node_id, "job_id": attempt.job_id, "reason": bad},
            )
            if attempt.side.live:
                self._failed(attempt, "invalid_result")
            else:
                self.book.fault(record, "invalid_result")
            return
        self.book.learn_speed(record, seconds, attempt.work)
        if not attempt.side.live:
            return  # cancelled or drained meanwhile
        spec = attempt.spec
        assert spec is not None
        attempt.side.finished(
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
        if attempt.state is AttemptState.CANCELLING:
            self.release(attempt)
            return
        self.release(attempt)
        if reason in HAND_BACK_REASONS:
            # The node handed the job back (it is shutting down): not its fault, not an attempt.
            attempt.side.ended(AttemptEnd(Outcome.HANDED_BACK, "handed_back", attempt.conn.node_id))
            return
        self._failed(attempt, "job_failed")

    def _on_rejected(self, attempt: Attempt, reason: str, now: float) -> None:
        conn = attempt.conn
        if attempt.state is not AttemptState.SENT:
            # Rejecting a job it already accepted is a failure of that job.
            self._on_failed(attempt, "rejected_late")
            return
        self.release(attempt)
        if reason == "busy":
            conn.busy_streak += 1
            backoff = min(BUSY_BACKOFF_MAX, BUSY_BACKOFF_FIRST * 2 ** (conn.busy_streak - 1))
            conn.busy_until = now + backoff
            self.book.refresh(conn)
            self.loop().call_later(backoff, self.book.refresh_and_notify, conn)
            attempt.side.ended(AttemptEnd(Outcome.BUSY, "busy", conn.node_id))
        else:
            attempt.side.ended(AttemptEnd(Outcome.REJECTED, "rejected", conn.node_id))

    def _on_timeout(self, attempt: Attempt) -> None:
        attempt.timer = None
        if not attempt.side.live or attempt.state not in ON_NODE:
            return
        reason = "accept_timeout" if attempt.state is AttemptState.SENT else "timeout"
        log.warning(
            "job timed out on a node", extra={"job_id": attempt.job_id, "node_id": attempt.conn.node_id}
        )
        self.cancel_on_node(attempt)
        self._failed(attempt, reason, release=False)

    def _failed(
        self, attempt: Attempt, reason: str, *, count_fault: bool = True, release: bool = True
    ) -> None:
        """An attempt did not deliver: fault the node, then the job decides (retry or give up)."""
        if release and attempt.state is not AttemptState.CANCELLING:
            self.release(attempt)
        if count_fault:
            self.book.fault(attempt.conn.record, reason)
        attempt.side.ended(AttemptEnd(Outcome.FAILED, reason, attempt.conn.node_id))
