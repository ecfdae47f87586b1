"""A test peer that speaks the node side of relay.proto over a real socket.

It is not a render node: it answers jobs the way a test needs (a valid image at once, after
a delay per step, garbage, the wrong size, a huge payload, silence...). It keeps one stream to
every relay address it is given and, like a real node, refuses work beyond its concurrency
with JobRejected(busy) whichever relay the job came from. ``python -m tests.relay.peer`` runs one
in its own process (so a test can SIGKILL it) and prints a TALOS_READY line once welcomed.
With ``reconnect`` it dials again whenever its stream ends, as a real node does (its jobs on the
broken stream are dropped: nobody could receive their results).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from PIL import Image

from talos.relay.v1 import relay_pb2, relay_pb2_grpc
from talos_common.server import KEEPALIVE_CLIENT_OPTIONS, message_size_options

SIZES = ("1024x1024", "832x1216", "1216x832")
MiB = 1024 * 1024
_IMAGES: dict[tuple[int, int, str], bytes] = {}


def tiny_image(width: int, height: int, output_format: str) -> bytes:
    """A flat-colour image of exactly that size and format (cached: it is encoded once)."""
    key = (width, height, output_format)
    if key not in _IMAGES:
        buf = io.BytesIO()
        Image.new("RGB", (width, height), (40, 90, 160)).save(buf, format=output_format.upper())
        _IMAGES[key] = buf.getvalue()
    return _IMAGES[key]


def preview_jpeg() -> bytes:
    key = (32, 32, "preview")
    if key not in _IMAGES:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="JPEG")
        _IMAGES[key] = buf.getvalue()
    return _IMAGES[key]


Send = Callable[[relay_pb2.NodeMessage], None]


@dataclass
class PeerJob:
    job: relay_pb2.RenderJob
    link: Link
    task: asyncio.Task[None] | None = None


@dataclass
class Link:
    """One stream to one relay address."""

    address: str
    outbox: asyncio.Queue[relay_pb2.NodeMessage | None] = field(default_factory=asyncio.Queue)
    node_id: str = ""
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    error: grpc.RpcError | None = None
    heartbeat_seconds: float = 10.0

    def send(self, message: relay_pb2.NodeMessage) -> None:
        self.outbox.put_nowait(message)


class PeerNode:
    """``behaviour`` is one of BEHAVIOURS or an async callable (node, pjob) → None."""

    BEHAVIOURS = ("ok", "garbage", "wrong_size", "wrong_format", "huge", "fail", "hang", "cancelled")

    def __init__(
        self,
        addresses: list[str] | str,
        token: str,
        *,
        behaviour: str | Callable[[PeerNode, PeerJob], Awaitable[None]] = "ok",
        concurrency: int = 1,
        sizes: tuple[str, ...] = SIZES,
        step_delay: float = 0.0,
        seconds_per_step: float = 0.1,
        heartbeat: bool = True,
        heartbeat_seconds: float | None = None,
        huge_bytes: int = 0,
        hello: bool = True,
        max_message_bytes: int = 64 * MiB,
        name: str = "peer",
        reconnect: bool = False,
    ) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.token = token
        self.behaviour = behaviour
        self.concurrency = concurrency
        self.sizes = sizes
        self.step_delay = step_delay
        self.seconds_per_step = seconds_per_step
        self.heartbeat = heartbeat
        self.heartbeat_override = heartbeat_seconds
        self.huge_bytes = huge_bytes
        self.hello = hello
        self.max_message_bytes = max_message_bytes
        self.name = name
        self.reconnect = reconnect
        self.connects = 0  # streams welcomed, reconnects included
        self.links: list[Link] = []
        self.jobs: dict[str, PeerJob] = {}
        self.received: list[str] = []  # every job id sent to this node, in order
        self.completed: list[str] = []
        self.rejected_busy = 0
        self.cancels: list[str] = []
        self.max_active = 0
        self._channels: list[grpc.aio.Channel] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def active(self) -> int:
        return len(self.jobs)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, within: float = 10.0) -> PeerNode:
        """Opens every stream and waits until each was welcomed (or refused)."""
        for address in self.addresses:
            link = Link(address)
            self.links.append(link)
            self._tasks.append(asyncio.create_task(self._run_link(link)))
        await asyncio.wait_for(asyncio.gather(*(self._settled(link) for link in self.links)), timeout=within)
        return self

    @staticmethod
    async def _settled(link: Link) -> None:
        done = [asyncio.create_task(link.welcomed.wait()), asyncio.create_task(link.ended.wait())]
        _, pending = await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pjob in list(self.jobs.values()):
            if pjob.task is not None:
                pjob.task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in self._channels:
            await channel.close(grace=None)

    async def __aenter__(self) -> PeerNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the stream ----------------------------------------------------------------------
    async def _requests(self, link: Link) -> AsyncIterator[relay_pb2.NodeMessage]:
        if self.hello:
            yield relay_pb2.NodeMessage(
                hello=relay_pb2.Hello(
                    model="talos-test-peer",
                    sizes=list(self.sizes),
                    concurrency=self.concurrency,
                    device="cpu",
                    version="0",
                    seconds_per_step=self.seconds_per_step,
                )
            )
        else:
            # A confused node: something other than Hello first.
            yield relay_pb2.NodeMessage(heartbeat=relay_pb2.Heartbeat(active_jobs=0))
        while True:
            message = await link.outbox.get()
            if message is None:
                return
            yield message

    async def _run_link(self, link: Link) -> None:
        await self._stream(link)
        while self.reconnect:
            for pjob in [p for p in self.jobs.values() if p.link is link]:
                self.jobs.pop(pjob.job.job_id, None)
                if pjob.task is not None:
                    pjob.task.cancel()
            link.outbox = asyncio.Queue()
            link.welcomed = asyncio.Event()
            link.ended = asyncio.Event()
            await asyncio.sleep(0.2)
            await self._stream(link)

    async def _stream(self, link: Link) -> None:
        options = KEEPALIVE_CLIENT_OPTIONS + message_size_options(self.max_message_bytes)
        channel = grpc.aio.insecure_channel(link.address, options=options)
        self._channels.append(channel)
        stub = relay_pb2_grpc.RelayServiceStub(channel)
        call = stub.Connect(self._requests(link), metadata=[("authorization", f"Bearer {self.token}")])
        beat: asyncio.Task[None] | None = None
        try:
            async for message in call:
                kind = message.WhichOneof("msg")
                if kind == "welcome":
                    link.node_id = message.welcome.node_id
                    link.heartbeat_seconds = self.heartbeat_override or message.welcome.heartbeat_seconds
                    link.welcomed.set()
                    self.connects += 1
                    if self.heartbeat:
                        beat = asyncio.create_task(self._beat(link))
                elif kind == "job":
                    self._on_job(link, message.job)
                elif kind == "cancel":
                    self._on_cancel(message.cancel.job_id)
        except grpc.RpcError as exc:
            link.error = exc
        finally:
            if beat is not None:
                beat.cancel()
            link.ended.set()
            if self.reconnect:
                self._channels.remove(channel)
                await channel.close(grace=None)

    async def _beat(self, link: Link) -> None:
        while True:
            await asyncio.sleep(link.heartbeat_seconds)
            link.send(relay_pb2.NodeMessage(heartbeat=relay_pb2.Heartbeat(active_jobs=self.active)))

    def _on_job(self, link: Link, job: relay_pb2.RenderJob) -> None:
        self.received.append(job.job_id)
        if self.active >= self.concurrency:
            self.rejected_busy += 1
            link.send(relay_pb2.NodeMessage(rejected=relay_pb2.JobRejected(job_id=job.job_id, reason="busy")))
            return
        pjob = PeerJob(job, link)
        self.jobs[job.job_id] = pjob
        self.max_active = max(self.max_active, self.active)
        pjob.task = asyncio.create_task(self._work(pjob))

    def _on_cancel(self, job_id: str) -> None:
        self.cancels.append(job_id)
        pjob = self.jobs.get(job_id)
        if pjob is not None and pjob.task is not None:
            pjob.task.cancel()

    async def _work(self, pjob: PeerJob) -> None:
        job_id = pjob.job.job_id
        try:
            if callable(self.behaviour):
                await self.behaviour(self, pjob)
            else:
                await self._builtin(pjob)
        except asyncio.CancelledError:
            if self.jobs.get(job_id) is pjob:  # not a job dropped with its broken stream
                pjob.link.send(
                    relay_pb2.NodeMessage(failed=relay_pb2.JobFailed(job_id=job_id, reason="cancelled"))
                )
        finally:
            if self.jobs.get(job_id) is pjob:
                del self.jobs[job_id]

    async def _builtin(self, pjob: PeerJob) -> None:
        job, send = pjob.job, pjob.link.send
        send(relay_pb2.NodeMessage(accepted=relay_pb2.JobAccepted(job_id=job.job_id)))
        mode = self.behaviour
        if mode == "hang":
            await asyncio.Event().wait()
        for step in range(1, job.steps + 1):
            if self.step_delay:
                await asyncio.sleep(self.step_delay)
            preview = preview_jpeg() if job.preview_every and step % job.preview_every == 0 else b""
            send(
                relay_pb2.NodeMessage(
                    progress=relay_pb2.JobProgress(
                        job_id=job.job_id, step=step, total_steps=job.steps, preview_jpeg=preview
                    )
                )
            )
        if mode == "fail":
            send(relay_pb2.NodeMessage(failed=relay_pb2.JobFailed(job_id=job.job_id, reason="error")))
            return
        if mode == "cancelled":
            send(relay_pb2.NodeMessage(failed=relay_pb2.JobFailed(job_id=job.job_id, reason="cancelled")))
            return
        fmt = job.output_format
        if mode == "garbage":
            image = os.urandom(4096)
        elif mode == "wrong_size":
            image = tiny_image(job.width // 2, job.height // 2, fmt)
        elif mode == "wrong_format":
            fmt = "png" if fmt != "png" else "jpeg"
            image = tiny_image(job.width, job.height, fmt)
            fmt = job.output_format  # claims the right one; the bytes say otherwise
        elif mode == "huge":
            image = tiny_image(job.width, job.height, fmt)
            image = image + b"\0" * max(0, self.huge_bytes - len(image))
        else:
            image = tiny_image(job.width, job.height, fmt)
        send(
            relay_pb2.NodeMessage(
                result=relay_pb2.JobResult(
                    job_id=job.job_id,
                    image=image,
                    output_format=fmt,
                    width=job.width,
                    height=job.height,
                    render_seconds=self.step_delay * job.steps,
                )
            )
        )
        self.completed.append(job.job_id)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="relay test peer")
    parser.add_argument("--relay", action="append", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--behaviour", default="ok")
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--reconnect", action="store_true")
    args = parser.parse_args()
    node = PeerNode(
        args.relay,
        args.token,
        behaviour=args.behaviour,
        step_delay=args.step_delay,
        concurrency=args.concurrency,
        reconnect=args.reconnect,
        name=args.token[-6:],
    )
    await node.start()
    print(
        "TALOS_READY " + json.dumps({"service": "peer", "node_id": [lk.node_id for lk in node.links]}),
        flush=True,
    )
    await asyncio.gather(*node._tasks)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
    sys.exit(0)
