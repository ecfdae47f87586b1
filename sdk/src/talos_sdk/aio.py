"""The asyncio client: ``async with AsyncClient(key) as c: image = await c.generate_image(...)``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_sdk import _core
from talos_sdk._core import Deadline, RetryPolicy, StreamPlan, UnaryPlan
from talos_sdk.errors import AuthenticationError, TalosError, error_from_rpc
from talos_sdk.models import Account, Completed, Event, Failed, Options, event_from_proto

__all__ = ["AsyncClient", "AsyncJobStream"]


class AsyncJobStream:
    """The events of one job, as an async iterator. Ends after the terminal event.

    Leaving the loop early ends the call; the gateway then cancels a job started by
    :meth:`AsyncClient.generate` (its hold is released), while a submitted job goes on.
    """

    def __init__(self, client: AsyncClient, plan: StreamPlan, events: AsyncIterator[Event]) -> None:
        self._client = client
        self._plan = plan
        self._events = events

    @property
    def job_id(self) -> str | None:
        return self._plan.job_id

    def __aiter__(self) -> AsyncJobStream:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Ends the call (a Generate job is then cancelled by the gateway; a submitted one goes on)."""
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    async def cancel(self) -> bool:
        """Cancels the job (when its id is known yet) and stops listening."""
        cancelled = False
        if self.job_id:
            cancelled = await self._client.cancel(self.job_id)
        await self.aclose()
        return cancelled

    async def result(self) -> Completed:
        """Reads the stream to its end: the image, or the failure raised as its exception."""
        async for event in self:
            if isinstance(event, Completed):
                return event
            if isinstance(event, Failed):
                raise event.error()
        raise self._plan.ended_early()

    async def __aenter__(self) -> AsyncJobStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncClient:
    """The asyncio twin of :class:`talos_sdk.Client` (same arguments, awaitable methods).

    The channel opens on first use, inside the running event loop.
    """

    def __init__(
        self,
        api_key: str | None = None,
        address: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = _core.DEFAULT_TIMEOUT,
        stream_timeout: float = _core.DEFAULT_STREAM_TIMEOUT,
        max_retries: int = 0,
        connect_retries: int = 3,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.api_key = _core.resolve_api_key(api_key)
        self.address = _core.resolve_address(address)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.retry_policy = RetryPolicy(connect_retries=connect_retries, max_retries=max_retries)
        self._tls = tls
        self._root_certificates = root_certificates
        self._channel: grpc.aio.Channel | None = channel
        self._stub_cache: Any = api_pb2_grpc.ImageServiceStub(channel) if channel is not None else None

    @property
    def _stub(self) -> Any:
        if self._stub_cache is None:
            if self._tls:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
                self._channel = grpc.aio.secure_channel(
                    self.address, credentials, options=_core.CHANNEL_OPTIONS
                )
            else:
                self._channel = grpc.aio.insecure_channel(self.address, options=_core.CHANNEL_OPTIONS)
            self._stub_cache = api_pb2_grpc.ImageServiceStub(self._channel)
        return self._stub_cache

    def _metadata(self, needs_key: bool = True) -> tuple[tuple[str, str], ...]:
        if needs_key and not self.api_key:
            raise AuthenticationError(
                f"no API key: pass api_key or set {_core.ENV_API_KEY}", code="invalid_api_key"
            )
        return _core.auth_metadata(self.api_key)

    def _policy(self, max_retries: int | None) -> RetryPolicy:
        if max_retries is None:
            return self.retry_policy
        return RetryPolicy(connect_retries=self.retry_policy.connect_retries, max_retries=max_retries)

    async def _unary(
        self,
        name: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109
        needs_key: bool = True,
        max_retries: int | None = None,
        capacity_retries: bool = False,
        job_id: str | None = None,
    ) -> Any:
        metadata = self._metadata(needs_key)
        method = getattr(self._stub, name)
        deadline = Deadline(timeout if timeout is not None else self.timeout)
        plan = UnaryPlan(self._policy(max_retries), deadline, capacity_retries=capacity_retries)
        while True:
            try:
                return await method(request, metadata=metadata, timeout=max(0.001, deadline.remaining()))
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, job_id=job_id)
                delay = plan.delay_after(error)
                if delay is None:
                    raise error from None
                await asyncio.sleep(delay)

    def generate(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        style: str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        nsfw: bool = False,
        output_format: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> AsyncJobStream:
        """Starts a job; ``async for event in client.generate(...)`` yields its events."""
        request = _core.build_request(
            prompt,
            negative_prompt=negative_prompt,
            style=style,
            size=size,
            aspect_ratio=aspect_ratio,
            steps=steps,
            guidance=guidance,
            seed=seed,
            nsfw=nsfw,
            output_format=output_format,
            idempotency_key=idempotency_key,
        )
        metadata = self._metadata()
        deadline = Deadline(timeout if timeout is not None else self.stream_timeout)
        plan = StreamPlan(self._policy(max_retries), deadline)
        return AsyncJobStream(self, plan, self._stream(plan, request, metadata))

    def watch(self, job_id: str, *, timeout: float | None = None) -> AsyncJobStream:
        """Follows a job; replays its current state."""
        metadata = self._metadata()
        deadline = Deadline(timeout if timeout is not None else self.stream_timeout)
        plan = StreamPlan(self.retry_policy, deadline, job_id=job_id)
        return AsyncJobStream(self, plan, self._stream(plan, None, metadata))

    async def _stream(self, plan: StreamPlan, request: Any, metadata: Any) -> AsyncIterator[Event]:
        while True:
            call: Any = None
            try:
                remaining = max(0.001, plan.deadline.remaining())
                if plan.mode == "generate":
                    call = self._stub.Generate(request, metadata=metadata, timeout=remaining)
                else:
                    watch = api_pb2.WatchRequest(job_id=plan.job_id)
                    call = self._stub.Watch(watch, metadata=metadata, timeout=remaining)
                async for message in call:
                    event = plan.accept(event_from_proto(message))
                    if event is None:
                        continue
                    if plan.terminal is not None:
                        await _drain(call)
                        yield event
                        return
                    yield event
                error: TalosError = plan.ended_early()
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, job_id=plan.job_id)
            finally:
                if call is not None:
                    call.cancel()
            delay = plan.delay_after(error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def generate_image(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        style: str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        nsfw: bool = False,
        output_format: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        max_retries: int | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> Completed:
        """Generates one image; a failed job raises its exception. ``on_event`` may be async."""
        stream = self.generate(
            prompt,
            negative_prompt=negative_prompt,
            style=style,
            size=size,
            aspect_ratio=aspect_ratio,
            steps=steps,
            guidance=guidance,
            seed=seed,
            nsfw=nsfw,
            output_format=output_format,
            idempotency_key=idempotency_key,
            timeout=timeout,
            max_retries=max_retries,
        )
        async with stream:
            async for event in stream:
                if on_event is not None:
                    outcome = on_event(event)
                    if asyncio.iscoroutine(outcome):
                        await outcome
                if isinstance(event, Completed):
                    return event
                if isinstance(event, Failed):
                    raise event.error()
        raise stream._plan.ended_early()

    async def submit(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        style: str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        nsfw: bool = False,
        output_format: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        max_retries: int | None = None,
    ) -> str:
        """Submits a job and returns its id at once; follow it with :meth:`watch`."""
        request = _core.build_request(
            prompt,
            negative_prompt=negative_prompt,
            style=style,
            size=size,
            aspect_ratio=aspect_ratio,
            steps=steps,
            guidance=guidance,
            seed=seed,
            nsfw=nsfw,
            output_format=output_format,
            idempotency_key=idempotency_key,
        )
        response = await self._unary(
            "Submit", request, timeout=timeout, max_retries=max_retries, capacity_retries=True
        )
        return str(response.job_id)

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Cancels a job this key owns; True when it was still running."""
        response = await self._unary(
            "Cancel", api_pb2.CancelRequest(job_id=job_id), timeout=timeout, job_id=job_id
        )
        return bool(response.cancelled)

    async def account(self, *, timeout: float | None = None) -> Account:  # noqa: ASYNC109
        response = await self._unary("GetAccount", api_pb2.GetAccountRequest(), timeout=timeout)
        return Account.from_proto(response)

    async def confirm_age(self, *, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        response = await self._unary("ConfirmAge", api_pb2.ConfirmAgeRequest(confirm=True), timeout=timeout)
        return bool(response.age_confirmed)

    async def options(self, *, timeout: float | None = None) -> Options:  # noqa: ASYNC109
        response = await self._unary(
            "GetOptions", api_pb2.GetOptionsRequest(), timeout=timeout, needs_key=False
        )
        return Options.from_proto(response)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _drain(call: Any) -> None:
    """Reads a stream to its end after the terminal event, so the server ends the call itself."""
    try:
        async for _ in call:
            pass
    except grpc.RpcError:
        pass
