"""Billing and moderation as the gateway calls them: one deadline on every call, errors as codes.

Every call carries ``settings.downstream_timeout_seconds`` as its gRPC deadline. A failed
call becomes a :class:`TalosError` read from the status' ErrorInfo (or from the bare status
code), so the pipeline decides on codes, never on messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos.moderation.v1 import moderation_pb2, moderation_pb2_grpc
from talos_common.errors import TalosError, from_rpc_error
from talos_common.server import message_size_options
from talos_gateway import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


def open_channel(addr: str, max_message_bytes: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(addr, options=message_size_options(max_message_bytes))


async def _call(service: str, method: str, call: Callable[[], Awaitable[T]]) -> T:
    started = time.perf_counter()
    outcome = "ok"
    try:
        return await call()
    except grpc.aio.AioRpcError as error:
        mapped = from_rpc_error(error)
        outcome = mapped.code
        raise mapped from None
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        metrics.DOWNSTREAM_SECONDS.labels(service, method, outcome).observe(time.perf_counter() - started)


async def _healthy(channel: grpc.aio.Channel, deadline_seconds: float) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline_seconds)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Billing:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self.channel = channel
        self.stub = billing_pb2_grpc.BillingServiceStub(channel)
        self.timeout = timeout

    async def authenticate(self, api_key: str) -> billing_pb2.AccountState:
        request = billing_pb2.AuthenticateRequest(api_key=api_key)
        return await _call(
            "billing", "Authenticate", lambda: self.stub.Authenticate(request, timeout=self.timeout)
        )

    async def get_account(self, account_id: str) -> billing_pb2.AccountState:
        request = billing_pb2.GetAccountRequest(account_id=account_id)
        return await _call(
            "billing", "GetAccount", lambda: self.stub.GetAccount(request, timeout=self.timeout)
        )

    async def confirm_age(self, account_id: str) -> billing_pb2.AccountState:
        request = billing_pb2.ConfirmAgeRequest(account_id=account_id)
        return await _call(
            "billing", "ConfirmAge", lambda: self.stub.ConfirmAge(request, timeout=self.timeout)
        )

    async def reserve(self, job_id: str, account_id: str) -> billing_pb2.ReserveResponse:
        request = billing_pb2.ReserveRequest(job_id=job_id, account_id=account_id)
        return await _call("billing", "Reserve", lambda: self.stub.Reserve(request, timeout=self.timeout))

    async def reserve_many(self, account_id: str, hold_ids: list[str]) -> billing_pb2.ReserveManyResponse:
        """Holds the price of each image at once: all of them, or none."""
        request = billing_pb2.ReserveManyRequest(account_id=account_id, job_ids=hold_ids)
        return await _call(
            "billing", "ReserveMany", lambda: self.stub.ReserveMany(request, timeout=self.timeout)
        )

    async def capture(self, job_id: str) -> billing_pb2.CaptureResponse:
        """Charges the hold; retried on transient failures (Capture is idempotent by job id)."""
        request = billing_pb2.CaptureRequest(job_id=job_id)
        return await _retrying(
            lambda: _call("billing", "Capture", lambda: self.stub.Capture(request, timeout=self.timeout))
        )

    async def release(self, job_id: str, reason: str) -> billing_pb2.ReleaseResponse:
        """Returns the hold; retried on transient failures (billing also expires holds itself)."""
        request = billing_pb2.ReleaseRequest(job_id=job_id, reason=reason)
        return await _retrying(
            lambda: _call("billing", "Release", lambda: self.stub.Release(request, timeout=self.timeout))
        )

    async def authenticate_node(self, token: str) -> str:
        """For the relay: a node token's node id (TalosError invalid_api_key when unknown)."""
        request = billing_pb2.AuthenticateNodeRequest(token=token)
        reply = await _call(
            "billing", "AuthenticateNode", lambda: self.stub.AuthenticateNode(request, timeout=self.timeout)
        )
        return str(reply.node_id)

    async def active_nodes(self, node_ids: list[str]) -> list[str]:
        """For the relay: which of these node ids still hold a live (not revoked) token."""
        request = billing_pb2.ActiveNodesRequest(node_ids=node_ids)
        reply = await _call(
            "billing", "ActiveNodes", lambda: self.stub.ActiveNodes(request, timeout=self.timeout)
        )
        return [str(node_id) for node_id in reply.active_node_ids]

    async def healthy(self) -> bool:
        return await _healthy(self.channel, min(self.timeout, 2.0))


class Moderation:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self.channel = channel
        self.stub = moderation_pb2_grpc.ModerationServiceStub(channel)
        self.timeout = timeout

    async def check_prompt(
        self, *, prompt: str, negative_prompt: str, final_prompt: str, final_negative: str, account_id: str
    ) -> moderation_pb2.PromptVerdict:
        request = moderation_pb2.CheckPromptRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            final_prompt=final_prompt,
            final_negative_prompt=final_negative,
            account_id=account_id,
        )
        return await _call(
            "moderation", "CheckPrompt", lambda: self.stub.CheckPrompt(request, timeout=self.timeout)
        )

    async def classify_image(self, image: bytes) -> moderation_pb2.ImageVerdict:
        metrics.CLASSIFY_CALLS.inc()
        request = moderation_pb2.ClassifyImageRequest(image=image)
        return await _call(
            "moderation", "ClassifyImage", lambda: self.stub.ClassifyImage(request, timeout=self.timeout)
        )

    async def healthy(self) -> bool:
        return await _healthy(self.channel, min(self.timeout, 2.0))


_TRANSIENT = {"unavailable", "timeout", "internal"}


async def _retrying(call: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except TalosError as error:
            if error.code not in _TRANSIENT or attempt == attempts:
                raise
            log.warning("billing call failed, retrying", extra={"code": error.code, "attempt": attempt})
        await asyncio.sleep(delay)
        delay *= 3
    raise AssertionError("unreachable")
