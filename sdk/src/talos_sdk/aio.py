"""The asyncio client: ``async with AsyncClient(key) as c: result = await c.generate(..., n=2)``.

Only the I/O loops live here; what they decide (requests, retries, resume) is in ``_core``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self, Unpack

import grpc
import grpc.aio

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_sdk import _core
from talos_sdk._core import ClientOptions, JobOptions, StreamPlan
from talos_sdk._request import build_request
from talos_sdk.events import Completed, Event, Generation
from talos_sdk.models import Account, Options

__all__ = ["AsyncClient", "AsyncJobStream"]


class _AsyncClosing:
    """``async with x:`` ends ``x`` at the end of the block (see ``_end``)."""

    async def _end(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._end()


class AsyncJobStream(_core.JobStreamBase, _AsyncClosing):
    """The events of one job, as an async iterator. Ends after every image's terminal event.

    Leaving the loop early ends the call; the gateway then cancels a job started by
    :meth:`AsyncClient.stream` (the holds of its unfinished images are released), while a
    submitted job goes on.
    """

    def __init__(self, client: AsyncClient, plan: StreamPlan, events: AsyncIterator[Event]) -> None:
        super().__init__(plan)
        self._client = client
        self._events = events

    def __aiter__(self) -> AsyncJobStream:
        return self

    async def __anext__(self) -> Event:
        return self._seen(await self._events.__anext__())

    async def aclose(self) -> None:
        """Ends the call (a streamed job is then cancelled by the gateway; a submitted one goes on)."""
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _end(self) -> None:
        await self.aclose()

    async def cancel(self) -> bool:
        """Cancels the job (when its id is known yet) and stops listening."""
        cancelled = False
        if self.job_id:
            cancelled = await self._client.cancel(self.job_id)
        await self.aclose()
        return cancelled

    async def result(self) -> Generation:
        """Reads the stream to its end: every image delivered and every image refunded.

        When no image was delivered, the first failure is raised as its exception instead.
        """
        return await self._result(None)

    async def _result(self, on_event: Callable[[Event], Any] | None) -> Generation:
        async for event in self:
            if on_event is not None:
                outcome = on_event(event)
                if asyncio.iscoroutine(outcome):
                    await outcome
        return self._generation()


class AsyncClient(_core.ClientBase, _AsyncClosing):
    """The asyncio twin of :class:`talos_sdk.Client` (same arguments, awaitable methods).

    The channel opens on first use, inside the running event loop.
    """

    def __init__(
        self,
        api_key: str | None = None,
        address: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(api_key, address, options, "AsyncClient")
        if channel is None:
            _ = self.transport  # a contradicting TLS setting fails here, as with Client
        self._channel: grpc.aio.Channel | None = channel
        self._stub_cache: Any = api_pb2_grpc.ImageServiceStub(channel) if channel is not None else None

    @property
    def _stub(self) -> Any:
        if self._stub_cache is None:
            self._channel = self._new_channel(grpc.aio)
            self._stub_cache = api_pb2_grpc.ImageServiceStub(self._channel)
        return self._stub_cache

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
        plan = self._unary_plan(timeout, max_retries, capacity_retries=capacity_retries, job_id=job_id)
        while True:
            try:
                return await method(request, metadata=metadata, timeout=plan.call_timeout())
            except grpc.RpcError as exc:
                await asyncio.sleep(plan.retry_delay(plan.error(exc)))

    async def _stream(self, plan: StreamPlan) -> AsyncIterator[Event]:
        while True:
            call: Any = None
            try:
                call = plan.open(self._stub)
                async for message in call:
                    event = plan.receive(message)
                    if event is None:
                        continue
                    if plan.done:
                        await _drain(call)
                        yield event
                        return
                    yield event
                if plan.finished_by_server():
                    return
                error = plan.ended_early()
            except grpc.RpcError as exc:
                error = plan.error(exc)
            finally:
                if call is not None:
                    call.cancel()
            await asyncio.sleep(plan.retry_delay(error))

    def stream(
        self,
        prompt: str,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        **options: Unpack[JobOptions],
    ) -> AsyncJobStream:
        """Starts a job; ``async for event in client.stream(...)`` yields its events."""
        plan = self._job_plan(prompt, options, timeout, max_retries, "stream")
        return AsyncJobStream(self, plan, self._stream(plan))

    def watch(self, job_id: str, *, timeout: float | None = None) -> AsyncJobStream:
        """Follows a job; replays its current state."""
        plan = self._watch_plan(job_id, timeout)
        return AsyncJobStream(self, plan, self._stream(plan))

    async def generate(
        self,
        prompt: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        max_retries: int | None = None,
        on_event: Callable[[Event], Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> Generation:
        """Generates ``n`` images and returns them all; raises when none was delivered.
        ``on_event`` may be async."""
        stream = self.stream(prompt, timeout=timeout, max_retries=max_retries, **options)
        async with stream:
            return await stream._result(on_event)

    async def generate_image(
        self,
        prompt: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        max_retries: int | None = None,
        on_event: Callable[[Event], Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> Completed:
        """One image; its failure is raised as its exception."""
        options = _core.single_image(options)
        result = await self.generate(
            prompt, timeout=timeout, max_retries=max_retries, on_event=on_event, **options
        )
        return result.images[0]

    async def submit(
        self,
        prompt: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        max_retries: int | None = None,
        **options: Unpack[JobOptions],
    ) -> str:
        """Submits a job and returns its id at once; follow it with :meth:`watch`."""
        request = build_request(prompt, options, where="submit")
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

    async def _end(self) -> None:
        await self.close()


async def _drain(call: Any) -> None:
    """Reads a stream to its end after the last terminal event, so the server ends the call itself."""
    try:
        async for _ in call:
            pass
    except grpc.RpcError:
        pass
