"""talos.relay.v1.RelayService.Connect: the stream a render node dials in with.

1. The token in ``authorization: Bearer <token>`` is resolved to a node id (UNAUTHENTICATED
   when billing does not know it, UNAVAILABLE when billing cannot answer).
2. The first message must be a Hello (INVALID_ARGUMENT otherwise); the relay answers Welcome.
3. From then on a reader task hands every node message to :meth:`Relay.on_message`, and this
   handler writes whatever the relay puts in the node's outbox (jobs, cancels) down the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from talos.relay.v1 import relay_pb2, relay_pb2_grpc
from talos_common import tls
from talos_common.errors import TalosError
from talos_common.server import build_server
from talos_common.settings import env_name
from talos_gateway.config import PREFIX, Settings
from talos_gateway.relay.core import Relay
from talos_gateway.relay.nodes import Close, NodeConn

log = logging.getLogger("talos_gateway.relay")

SERVICE_NAME = "talos.relay.v1.RelayService"
# TalosError codes from authenticate_node that mean "this token is not valid".
BAD_TOKEN_CODES = frozenset({"invalid_api_key", "not_found", "invalid_request", "unimplemented"})


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class RelayServicer(relay_pb2_grpc.RelayServiceServicer):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def Connect(
        self,
        request_iterator: AsyncIterator[relay_pb2.NodeMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[relay_pb2.RelayMessage]:
        relay = self.relay
        settings = relay.settings
        token = bearer_token(context.invocation_metadata())
        if token is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing node token (authorization: Bearer)")
        assert token is not None
        try:
            node_id = await relay.authenticate(token)
        except TalosError as exc:
            if exc.code in BAD_TOKEN_CODES:
                log.warning("node refused: bad token", extra={"peer": context.peer()})
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "node token not recognised")
            log.warning("cannot check a node token", extra={"code": exc.code})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "cannot check the node token now; retry")
        except Exception:
            log.exception("node token check failed")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "cannot check the node token now; retry")
        if not node_id:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "node token not recognised")

        iterator = aiter(request_iterator)
        try:
            first = await asyncio.wait_for(anext(iterator), timeout=settings.node_silence_seconds)
        except (StopAsyncIteration, TimeoutError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        try:
            await relay.recall(node_id)
            conn = relay.attach(node_id, first.hello, peer=context.peer())
        except TalosError as exc:
            code = (
                grpc.StatusCode.INVALID_ARGUMENT
                if exc.code == "invalid_request"
                else grpc.StatusCode.UNAVAILABLE
            )
            await context.abort(code, exc.message)

        reader = asyncio.create_task(self._read(conn, iterator), name=f"relay-read-{conn.seq}")
        close: Close | None = None
        try:
            yield relay_pb2.RelayMessage(
                welcome=relay_pb2.Welcome(
                    node_id=node_id, heartbeat_seconds=max(1, round(settings.heartbeat_seconds))
                )
            )
            outbox = conn.outbox
            while True:
                item = await outbox.get()
                if isinstance(item, Close):
                    close = item
                    break
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            relay.detach(conn, "stream ended")
        if close is not None and close.code is not None:
            try:
                await context.abort(close.code, close.details)
            except grpc.aio.AbortError:
                raise
            except Exception:
                return

    async def _read(self, conn: NodeConn, iterator: AsyncIterator[relay_pb2.NodeMessage]) -> None:
        reason = "node closed the stream"
        try:
            async for message in iterator:
                self.relay.on_message(conn, message)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            reason = f"stream error: {exc.code() if hasattr(exc, 'code') else exc}"
        except Exception:
            log.exception("relay failed on a node message", extra={"node_id": conn.node_id})
            reason = "relay error"
        # The node is gone (or sent something the relay could not take): end the stream.
        self.relay.detach(conn, reason)


async def start_relay_server(relay: Relay, settings: Settings) -> tuple[grpc.aio.Server, int]:
    """Builds, binds (settings.host:settings.relay_port) and starts the relay's gRPC server.

    The node link leaves the operator's hands: with ``relay_tls_cert_file`` and
    ``relay_tls_key_file`` it serves TLS, reloading the files when they are renewed.

    With ``settings.redis_url`` the relay then joins its network first (Redis, the peer server
    on ``settings.peer_port``, the registry), so the network's nodes are known once this returns.

    Health, reflection, the error interceptor, a 32 MiB message cap and the keepalive options
    the render node uses all come from :func:`talos_common.server.build_server`.
    """
    servicer = RelayServicer(relay)
    server, _health = build_server(
        [lambda s: relay_pb2_grpc.add_RelayServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
        max_message_bytes=settings.relay_max_message_bytes,
    )
    port = tls.bind(
        server,
        settings.host,
        settings.relay_port,
        env_name(PREFIX, "relay_port"),
        settings.relay_tls_cert_file,
        settings.relay_tls_key_file,
    )
    await server.start()
    try:
        await relay.open()
    except BaseException:
        await server.stop(None)
        raise
    return server, port
