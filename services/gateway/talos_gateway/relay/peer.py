"""Carrying a job between replicas (talos.relay.v1.PeerService/Carry, in-cluster plaintext).

The **host** (the replica whose node claimed the ticket) opens a carry to the **origin** (the
replica that accepted the job) and names the ticket it claimed; the origin answers with the
RenderJob, the host sends it down its node's stream and carries the node's answers back:
started, progress, the image after the host checked it (the host owns the node's faults and
quarantine), or how the attempt ended. The origin may send CancelJob.

The call is the attempt's lifeline: when the origin goes away the host cancels the job on its
node; when the host goes away the origin counts the attempt as failed (node lost) and queues
the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from talos.relay.v1 import peer_pb2, peer_pb2_grpc, relay_pb2
from talos_common.server import KEEPALIVE_CLIENT_OPTIONS, message_size_options
from talos_gateway.relay.attempts import Attempt, AttemptEnd, Outcome
from talos_gateway.relay.contract import Finished, Progress
from talos_gateway.relay.nodes import NodeConn
from talos_gateway.relay.origin import Job, Jobs
from talos_gateway.relay.queue import Ticket
from talos_gateway.relay.states import ON_NODE, AttemptState
from talos_gateway.relay.wire import render_job, spec_of

if TYPE_CHECKING:
    from talos_gateway.relay.core import Relay

log = logging.getLogger("talos_gateway.relay")

SERVICE_NAME = "talos.relay.v1.PeerService"
OUTCOMES = {
    Outcome.FAILED: peer_pb2.ATTEMPT_OUTCOME_FAILED,
    Outcome.BUSY: peer_pb2.ATTEMPT_OUTCOME_BUSY,
    Outcome.REJECTED: peer_pb2.ATTEMPT_OUTCOME_REJECTED,
    Outcome.HANDED_BACK: peer_pb2.ATTEMPT_OUTCOME_HANDED_BACK,
}
FROM_WIRE = {wire: outcome for outcome, wire in OUTCOMES.items()}


# ---------------------------------------------------------------------------- the origin's side
class RemoteDispatch:
    """The origin's handle on an attempt running on another replica's node."""

    def __init__(self, jobs: Jobs, job: Job, node_id: str) -> None:
        self.jobs = jobs
        self.job = job
        self.node_id = node_id
        self.outbox: asyncio.Queue[peer_pb2.OriginMessage | None] = asyncio.Queue()
        self.closed = False

    def cancel(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(peer_pb2.OriginMessage(cancel=relay_pb2.CancelJob(job_id=self.job.job_id)))
            self.outbox.put_nowait(None)

    def on_message(self, message: peer_pb2.HostMessage) -> None:
        jobs, job = self.jobs, self.job
        kind = message.WhichOneof("msg")
        if kind == "started":
            jobs.started(job, self, self.node_id)
        elif kind == "progress":
            p = message.progress
            jobs.progress(job, self, Progress(p.step, p.total_steps, p.preview_jpeg))
        elif kind == "result":
            r = message.result
            spec = job.spec
            if (r.width, r.height, r.output_format) != (spec.width, spec.height, spec.output_format):
                jobs.attempt_ended(job, self, AttemptEnd(Outcome.FAILED, "invalid_result", self.node_id))
                return
            result = Finished(
                r.image, r.width, r.height, r.output_format, self.node_id, round(r.render_seconds, 4)
            )
            jobs.finished(job, self, result)
        elif kind == "ended":
            e = message.ended
            outcome = FROM_WIRE.get(e.outcome, Outcome.FAILED)
            jobs.attempt_ended(job, self, AttemptEnd(outcome, e.reason[:50] or "failed", self.node_id))

    def link_ended(self) -> None:
        """The carry ended: an attempt that had not ended lost its host (and so its node)."""
        self.closed = True
        if self.jobs.current(self.job, self):
            self.jobs.attempt_ended(self.job, self, AttemptEnd(Outcome.FAILED, "disconnect", self.node_id))


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def Carry(
        self, request_iterator: AsyncIterator[peer_pb2.HostMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[peer_pb2.OriginMessage]:
        relay = self.relay
        iterator = aiter(request_iterator)
        try:
            first = await asyncio.wait_for(anext(iterator), timeout=relay.settings.downstream_timeout_seconds)
        except (StopAsyncIteration, TimeoutError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Claim")
        if first.WhichOneof("msg") != "claim":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Claim")
        claim = first.claim
        job = relay.jobs.claim(claim.job_id, claim.secret)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "the job no longer waits for this ticket")
        assert job is not None
        remote = RemoteDispatch(relay.jobs, job, claim.node_id)
        relay.jobs.dispatched(job, remote)
        reader = asyncio.create_task(self._read(remote, iterator), name=f"peer-origin-{job.job_id}")
        try:
            yield peer_pb2.OriginMessage(job=render_job(job.job_id, job.spec))
            while True:
                item = await remote.outbox.get()
                if item is None:
                    break
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            remote.link_ended()

    @staticmethod
    async def _read(remote: RemoteDispatch, iterator: AsyncIterator[peer_pb2.HostMessage]) -> None:
        try:
            async for message in iterator:
                remote.on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info(
                "carry from a host ended", extra={"job_id": remote.job.job_id, "error": type(exc).__name__}
            )
        remote.closed = True
        remote.outbox.put_nowait(None)


# ---------------------------------------------------------------------------- the host's side
class CarriedJob:
    """The host's stand-in for another replica's job: the attempt reports here, it goes up the carry."""

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        self.outbox: asyncio.Queue[peer_pb2.HostMessage | None] = asyncio.Queue()
        self.closed = False
        self.attempt: Attempt | None = None

    @property
    def live(self) -> bool:
        return not self.closed

    def _send(self, message: peer_pb2.HostMessage) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def _finish(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)

    def started(self, node_id: str) -> None:
        self._send(peer_pb2.HostMessage(started=peer_pb2.NodeStarted(node_id=node_id)))

    def progress(self, event: Progress) -> None:
        self._send(
            peer_pb2.HostMessage(
                progress=relay_pb2.JobProgress(
                    job_id=self.ticket.job_id,
                    step=event.step,
                    total_steps=event.total_steps,
                    preview_jpeg=event.preview_jpeg,
                )
            )
        )

    def finished(self, result: Finished) -> None:
        self._send(
            peer_pb2.HostMessage(
                result=peer_pb2.CheckedResult(
                    image=result.image,
                    output_format=result.output_format,
                    width=result.width,
                    height=result.height,
                    render_seconds=result.render_seconds,
                )
            )
        )
        self._finish()

    def ended(self, end: AttemptEnd) -> None:
        self._send(
            peer_pb2.HostMessage(
                ended=peer_pb2.AttemptEnded(
                    outcome=OUTCOMES[end.outcome], reason=end.reason, node_id=end.node_id
                )
            )
        )
        self._finish()

    async def requests(self) -> AsyncIterator[peer_pb2.HostMessage]:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            yield message


class Carrier:
    """The host's carries: one call per claimed ticket of another replica, one channel per origin."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            options = KEEPALIVE_CLIENT_OPTIONS + message_size_options(
                self.relay.settings.relay_max_message_bytes
            )
            channel = self._channels[address] = grpc.aio.insecure_channel(address, options=options)
        return channel

    def carry(self, ticket: Ticket, conn: NodeConn) -> None:
        side = CarriedJob(ticket)
        side.attempt = self.relay.work.open(ticket.job_id, side, conn)
        task = asyncio.create_task(self._run(side, conn), name=f"peer-host-{ticket.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, side: CarriedJob, conn: NodeConn) -> None:
        work = self.relay.work
        ticket = side.ticket
        attempt = side.attempt
        assert attempt is not None
        side.outbox.put_nowait(
            peer_pb2.HostMessage(
                claim=peer_pb2.Claim(
                    job_id=ticket.job_id,
                    secret=ticket.secret,
                    host_replica=self.relay.replica_id,
                    node_id=conn.node_id,
                )
            )
        )
        stub = peer_pb2_grpc.PeerServiceStub(self._channel(ticket.origin_peer))
        call = stub.Carry(side.requests())
        try:
            first = await asyncio.wait_for(
                call.read(), timeout=self.relay.settings.downstream_timeout_seconds
            )
            if first is grpc.aio.EOF or first.WhichOneof("msg") != "job":
                return
            work.send(attempt, spec_of(first.job))
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    break
                if message.WhichOneof("msg") == "cancel":
                    work.cancel_on_node(attempt)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                log.info(
                    "carry to the origin ended", extra={"job_id": ticket.job_id, "code": exc.code().name}
                )
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._drop_channel(ticket.origin_peer)
        except TimeoutError:
            log.warning("the origin did not answer a claim", extra={"job_id": ticket.job_id})
        finally:
            side.closed = True
            if attempt.state is AttemptState.FETCHING:
                work.release(attempt)
            elif attempt.state in ON_NODE:
                work.cancel_on_node(attempt)  # nobody can receive its result now
            call.cancel()

    def _drop_channel(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            task = asyncio.create_task(channel.close(grace=None))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
