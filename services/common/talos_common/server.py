"""Builds and runs a ``grpc.aio`` server the way every TALOS service does.

Health checking and reflection are always on, :class:`TalosError` becomes a rich status,
SIGTERM and SIGINT drain gracefully, and once listening the service prints one
``TALOS_READY {...}`` line on stdout so a supervisor (``make up``, the tests) learns the
real ports even when they were 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from talos_common.errors import TalosError

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# Both sides of every long-lived stream use these, so neither answers too_many_pings.
KEEPALIVE_SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]
KEEPALIVE_CLIENT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def message_size_options(max_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
    ]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns :class:`TalosError` into its status and hides unexpected exceptions."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner_uu(request, context)
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for item in inner_us(request, context):
                        yield item
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for item in inner_ss(requests, context):
                        yield item
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    # context.abort raises AbortError; an abort already under way must pass through.
    if type(exc).__name__ == "AbortError" or (
        isinstance(exc, grpc.RpcError) and not isinstance(exc, grpc.aio.AioRpcError)
    ):
        raise exc
    if isinstance(exc, TalosError):
        status = exc.to_status()
    else:
        log.exception("unhandled error", extra={"method": method})
        status = TalosError("internal", "internal error").to_status()
    await context.abort_with_status(status)


def build_server(
    register: Iterable[Callable[[grpc.aio.Server], None]],
    service_names: Sequence[str],
    *,
    max_message_bytes: int = 4 * MiB,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A server with our servicers, health (all SERVING) and reflection.

    ``extra_options`` win over the defaults of the same name (gRPC keeps the first of two
    duplicate channel args, so the defaults they replace are left out).
    """
    extra = list(extra_options)
    replaced = {name for name, _ in extra}
    defaults = message_size_options(max_message_bytes) + KEEPALIVE_SERVER_OPTIONS
    options = [option for option in defaults if option[0] not in replaced] + extra
    server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=options)
    for add in register:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    return server, health_servicer


async def set_serving(
    health_servicer: health.aio.HealthServicer, service_names: Sequence[str], serving: bool
) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, status)


class PortInUse(OSError):
    """A listener could not bind; ``setting`` names the variable that chose the address."""

    def __init__(self, setting: str, host: str, port: int) -> None:
        super().__init__(
            f"cannot listen on {host}:{port} (set by {setting}): the address is in use or not local"
        )
        self.setting = setting
        self.host = host
        self.port = port


def bind(server: grpc.aio.Server, host: str, port: int, setting: str = "") -> int:
    """Adds a plaintext listener; :class:`PortInUse` naming ``setting`` when it cannot bind."""
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # newer grpcio raises instead of returning 0
        bound = 0
    if bound == 0:
        raise PortInUse(setting or "the service's port setting", host, port)
    return bound


def announce_ready(service: str, **addresses: Any) -> None:
    """Prints the one line a supervisor waits for; the real ports even when 0 was asked."""
    print("TALOS_READY " + json.dumps({"service": service, **addresses}), flush=True)


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set on SIGTERM or SIGINT, so ``serve()`` can drain instead of dying."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
