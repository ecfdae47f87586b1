"""A small, real talos.relay.v1.RelayService for the node-link tests.

The real relay lives in the gateway; this peer implements just the server side of the
protocol so the node's link can be tested against a real gRPC server on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from talos.relay.v1 import relay_pb2, relay_pb2_grpc
from talos_common import server as common_server

TOKEN = "node-token-for-tests"
TERMINAL = ("result", "failed")


@dataclass(eq=False)
class NodeStream:
    """One node stream as the relay sees it."""

    hello: relay_pb2.Hello
    authorization: str
    incoming: asyncio.Queue[relay_pb2.NodeMessage | None] = field(default_factory=asyncio.Queue)
    outgoing: asyncio.Queue[relay_pb2.RelayMessage | None] = field(default_factory=asyncio.Queue)
    heartbeats: int = 0
    heartbeat_seen: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def send_job(self, job: relay_pb2.RenderJob) -> None:
        self.outgoing.put_nowait(relay_pb2.RelayMessage(job=job))

    def cancel(self, job_id: str) -> None:
        self.outgoing.put_nowait(relay_pb2.RelayMessage(cancel=relay_pb2.CancelJob(job_id=job_id)))

    async def next(self, within: float = 60.0) -> relay_pb2.NodeMessage:
        """The next message other than a heartbeat (those are counted); fails if the stream ends."""
        async with asyncio.timeout(within):
            while True:
                message = await self.incoming.get()
                if message is None:
                    raise EOFError("the node closed its stream")
                return message

    async def job_events(self, job_id: str, within: float = 120.0) -> list[relay_pb2.NodeMessage]:
        """Every message of one job up to and including its terminal one."""
        events = []
        async with asyncio.timeout(within):
            while True:
                message = await self.next(within)
                kind = message.WhichOneof("msg")
                if getattr(message, kind).job_id != job_id:
                    continue
                events.append(message)
                if kind in TERMINAL:
                    return events


class RelayPeer(relay_pb2_grpc.RelayServiceServicer):
    def __init__(self, token: str = TOKEN, heartbeat_seconds: int = 1) -> None:
        self.token = token
        self.heartbeat_seconds = heartbeat_seconds
        self.streams: asyncio.Queue[NodeStream] = asyncio.Queue()
        self.refused = 0
        self.refusal = asyncio.Event()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def Connect(
        self, request_iterator: AsyncIterator[relay_pb2.NodeMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[relay_pb2.RelayMessage]:
        metadata = {k: v for k, v in context.invocation_metadata() or ()}
        authorization = str(metadata.get("authorization", ""))
        if authorization != f"Bearer {self.token}":
            self.refused += 1
            self.refusal.set()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown node token")
        first = await anext(aiter(request_iterator))
        assert first.WhichOneof("msg") == "hello", "the node's first message must be a Hello"
        stream = NodeStream(hello=first.hello, authorization=authorization)

        async def read() -> None:
            try:
                async for message in request_iterator:
                    if message.WhichOneof("msg") == "heartbeat":
                        stream.heartbeats += 1
                        stream.heartbeat_seen.set()
                    else:
                        stream.incoming.put_nowait(message)
            finally:
                stream.incoming.put_nowait(None)
                stream.outgoing.put_nowait(None)

        reader = asyncio.create_task(read())
        self.streams.put_nowait(stream)
        try:
            yield relay_pb2.RelayMessage(
                welcome=relay_pb2.Welcome(node_id="node-1", heartbeat_seconds=self.heartbeat_seconds)
            )
            while True:
                outgoing = await stream.outgoing.get()
                if outgoing is None:
                    break
                yield outgoing
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            stream.ended.set()

    async def next_stream(self, within: float = 60.0) -> NodeStream:
        async with asyncio.timeout(within):
            return await self.streams.get()

    async def start(self, port: int = 0) -> int:
        options = (
            common_server.message_size_options(32 * common_server.MiB)
            + common_server.KEEPALIVE_SERVER_OPTIONS
        )
        self.server = grpc.aio.server(options=options)
        relay_pb2_grpc.add_RelayServiceServicer_to_server(self, self.server)
        self.port = common_server.bind(self.server, "127.0.0.1", port)
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
