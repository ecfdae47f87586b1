"""Moving tickets: pushing this replica's, claiming the network's for this replica's free nodes.

With a shared queue one task (the dispatcher) talks to it, so pushes, removals and claims reach
it in the order they were made. It runs whenever something changed (a ticket pushed or
removed, a node slot freed, another replica announcing a ticket) and at least every
``claim_every_seconds`` (a lost announcement only delays a claim). With the queue in memory the
same work is a plain call, run once per loop turn after any change. A claimed ticket of this
replica's own job is dispatched in-process; another replica's is carried
(:mod:`talos_gateway.relay.peer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from talos_gateway.config import Settings
from talos_gateway.relay.attempts import Attempt, AttemptEnd, NodeWork
from talos_gateway.relay.capacity import Capacity, estimate_etas, retry_after
from talos_gateway.relay.contract import Finished, Progress
from talos_gateway.relay.nodes import NodeBook, NodeConn, size_text
from talos_gateway.relay.origin import Identity, Job, Jobs
from talos_gateway.relay.placement import node_key
from talos_gateway.relay.queue import FreeNode, MemoryQueue, QueueView, Ticket, TicketQueue
from talos_gateway.relay.states import JobState
from talos_gateway.relay.timing import stop_task, wait_event

log = logging.getLogger("talos_gateway.relay")

# Position and ETA updates are computed at most this often.
POSITIONS_EVERY = 0.1
# The most nodes one claim offers the network queue (the best ones).
OFFER_MAX = 64
# After the queue could not be reached, wait this long before trying again.
RETRY_SECONDS = 0.5
# A waiting job whose ticket is missing from the queue this long is pushed again.
LOST_TICKET_SECONDS = 2.0


class Carrier(Protocol):
    def carry(self, ticket: Ticket, conn: NodeConn) -> None: ...


class LocalBinding:
    """A job of this replica on a node of this replica: the attempt reports to the job directly."""

    def __init__(self, jobs: Jobs, job: Job, work: NodeWork) -> None:
        self.jobs = jobs
        self.job = job
        self.work = work
        self.attempt: Attempt | None = None

    @property
    def node_id(self) -> str:
        return self.attempt.conn.node_id if self.attempt is not None else ""

    @property
    def live(self) -> bool:
        return self.jobs.current(self.job, self)

    def started(self, node_id: str) -> None:
        self.jobs.started(self.job, self, node_id)

    def progress(self, event: Progress) -> None:
        self.jobs.progress(self.job, self, event)

    def finished(self, result: Finished) -> None:
        self.jobs.finished(self.job, self, result)

    def ended(self, end: AttemptEnd) -> None:
        self.jobs.attempt_ended(self.job, self, end)

    def cancel(self) -> None:
        if self.attempt is not None:
            self.work.cancel_on_node(self.attempt)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        queue: TicketQueue,
        book: NodeBook,
        work: NodeWork,
        jobs: Jobs,
        capacity: Capacity,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.queue = queue
        self.book = book
        self.work = work
        self.jobs = jobs
        self.capacity = capacity
        self.carrier: Carrier | None = None
        self.view = QueueView([], [], at=0.0)
        self._length = 0
        self.draining = False
        self.closed = False
        self.memory = queue if isinstance(queue, MemoryQueue) else None
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pump_scheduled = False
        self._positions_handle: asyncio.TimerHandle | None = None
        self._positions_at = 0.0
        self._pushed_again: dict[str, float] = {}
        self._failing_since: float | None = None

    # -- what the jobs ask --
    def push(self, ticket: Ticket, *, front: bool) -> None:
        self.queue.stage_push(ticket, front=front)
        self._length += 1  # until the next exchange says how long the queue is
        self.wake()

    def remove(self, ticket: Ticket) -> None:
        self.queue.stage_remove(ticket)
        self._length = max(0, self._length - 1)
        self.wake()

    def queue_length(self) -> int:
        if not self.queue.shared:
            return self.queue.local_length()
        return self._length

    def queued_for(self, account_id: str) -> int:
        local = sum(1 for job in self.jobs.queued() if job.account_id == account_id)
        if not self.queue.shared:
            return local
        return max(local, self.view.count(account_id))

    def retry_after(self) -> float:
        return retry_after(self.queue_length(), self.capacity.total_slots(), self.capacity.mean_sps())

    def changed(self) -> None:
        self.wake()

    def wake(self) -> None:
        if self.closed:
            return
        if self.memory is None:
            self._woken.set()
        elif not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def node_changed(self) -> None:
        """A node may take work now (a slot freed, a back-off or a quarantine ended)."""
        if self.book.placement.available and (self.queue.shared or self.queue.local_length()):
            self.wake()

    # -- the claimer --
    def can_claim(self) -> bool:
        return not self.closed and bool(self.book.placement.available)

    def place(self, ticket: Ticket) -> bool:
        conn = self.book.placement.pick(ticket)
        if conn is None:
            return False
        self._assign(ticket, conn)
        return True

    def offer(self) -> list[FreeNode]:
        return [
            FreeNode(
                c.node_id, [size_text(s) for s in c.info.sizes], c.free_slots, tuple(c.attempts), node_key(c)
            )
            for c in self.book.placement.best(OFFER_MAX)
        ]

    def place_on(self, ticket: Ticket, node_id: str) -> None:
        placement = self.book.placement
        conn = self.book.conns.get(node_id)
        if conn is None or not placement.fits(conn, ticket):
            conn = placement.pick(ticket)
        if conn is None:
            # The node went away between the offer and the grant: the ticket goes back first in line.
            self.queue.stage_push(ticket, front=True)
            self.wake()
            return
        self._assign(ticket, conn)

    def _assign(self, ticket: Ticket, conn: NodeConn) -> None:
        if ticket.origin != self.identity.replica_id:
            assert self.carrier is not None
            self.carrier.carry(ticket, conn)
            return
        job = self.jobs.claim(ticket.job_id, ticket.secret)
        if job is None:
            return  # it ended meanwhile; its ticket went with the claim
        binding = LocalBinding(self.jobs, job, self.work)
        self.jobs.dispatched(job, binding)
        binding.attempt = self.work.open(job.job_id, binding, conn)
        self.work.send(binding.attempt, job.spec)

    # -- the task --
    def start(self) -> None:
        if self._task is None and not self.closed and self.memory is None:
            self._task = asyncio.create_task(self._run(), name="relay-dispatcher")

    async def close(self) -> None:
        self.closed = True
        if self._positions_handle is not None:
            self._positions_handle.cancel()
        await stop_task(self._task)

    # -- one replica: the queue in memory --
    def _pump(self) -> None:
        self._pump_scheduled = False
        memory = self.memory
        assert memory is not None
        if self.closed:
            return
        if len(memory) and self.can_claim():
            memory.dispatch(self)
        if len(memory) and self._positions_handle is None:
            delay = max(0.0, self._positions_at + POSITIONS_EVERY - time.monotonic())
            self._positions_handle = asyncio.get_running_loop().call_later(delay, self._memory_positions)

    def _memory_positions(self) -> None:
        self._positions_handle = None
        if self._pump_scheduled:
            self._pump()  # dispatch first: a job a free node is about to take is not reported queued
        self._positions_at = time.monotonic()
        assert self.memory is not None
        if len(self.memory):
            self._publish_positions(list(self.memory.fair.in_order()))

    # -- many replicas: the queue in Redis --
    def _timeout(self) -> float:
        if self.jobs.queued():
            return max(0.0, self._positions_at + POSITIONS_EVERY - time.monotonic())
        return self.settings.claim_every_seconds

    async def _run(self) -> None:
        while not self.closed:
            if not self._woken.is_set():
                await wait_event(self._woken, self._timeout())
            self._woken.clear()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                    log.exception("the network queue cannot be reached; retrying")
                await asyncio.sleep(RETRY_SECONDS)
                self._woken.set()
            else:
                if self._failing_since is not None:
                    log.info("the network queue answers again")
                    self._failing_since = None

    async def step(self) -> None:
        """One exchange with the queue: staged pushes and removals, claims, and (when due) a view."""
        now = time.monotonic()
        positions_due = bool(self.jobs.queued()) and now >= self._positions_at + POSITIONS_EVERY
        want_view = positions_due or now - self.view.at >= self.settings.claim_every_seconds
        claimer = self if self.can_claim() else None
        if claimer is None and not want_view and not self.queue.pending():
            return
        exchanged = await self.queue.exchange(claimer, want_view=want_view)
        for job_id in exchanged.rejected:
            self.jobs.push_refused(job_id)
        self._length = exchanged.length
        if exchanged.view is not None:
            self.view = exchanged.view
            self.capacity.update(exchanged.view.nodes)
            self._push_again_if_lost(exchanged.view)
            if positions_due:
                self._positions_at = time.monotonic()
                self._publish_positions(exchanged.view.tickets)

    def _push_again_if_lost(self, view: QueueView) -> None:
        """Tickets of this replica's waiting jobs that the queue lost (Redis restarted without
        persistence, or dropped them while this replica's registration had lapsed) go back.

        A ticket claimed but not yet fetched is missing too; pushing it again is harmless: the
        job is fetched once (a second claim finds it dispatched and lets go of its node).
        """
        now = time.monotonic()
        present = {t.job_id for t in view.tickets}
        for job in self.jobs.queued():
            ticket = job.ticket
            if ticket is None or ticket.job_id in present:
                continue
            last = self._pushed_again.get(job.job_id, job.enqueued_at)
            if now - last >= LOST_TICKET_SECONDS:
                self._pushed_again[job.job_id] = now
                self.queue.stage_push(ticket, front=True)
                self.wake()
        for job_id in [j for j in self._pushed_again if j not in self.jobs.jobs]:
            del self._pushed_again[job_id]

    def _publish_positions(self, tickets: list[Ticket]) -> None:
        me = self.identity.replica_id
        if not any(t.origin == me for t in tickets):
            return
        etas = estimate_etas(
            [t.work for t in tickets],
            self.capacity.slot_waits(len(tickets)),
            self.capacity.mean_sps(),
            self.settings.queue_timeout_seconds,
        )
        # A job that an idle node elsewhere is about to claim is not reported queued at once.
        settle = POSITIONS_EVERY if self.capacity.counts()["nodes_idle"] else 0.0
        now = time.monotonic()
        for position, (ticket, eta) in enumerate(zip(tickets, etas, strict=True), start=1):
            if ticket.origin != me:
                continue
            job = self.jobs.jobs.get(ticket.job_id)
            if (
                job is not None
                and job.state is JobState.QUEUED
                and job.ticket is not None
                and job.ticket.secret == ticket.secret
                and now - job.enqueued_at >= settle
            ):
                self.jobs.publish_position(job, position, eta)
