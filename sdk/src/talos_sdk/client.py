"""The blocking client: ``Client(api_key).generate_image("a lighthouse at dusk")``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import grpc

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_sdk import _core
from talos_sdk._core import Deadline, RetryPolicy, StreamPlan, UnaryPlan
from talos_sdk.errors import AuthenticationError, TalosError, error_from_rpc
from talos_sdk.models import Account, Completed, Event, Failed, Options, event_from_proto

__all__ = ["Client", "JobStream"]

T = TypeVar("T")


class JobStream:
    """The events of one job, as an iterator. Ends after the terminal event.

    ``job_id`` is known from the first event on. Leaving the loop early (``break``, an
    exception, ``close()``) ends the call; the gateway then cancels a job started by
    :meth:`Client.generate` (its hold is released), while a job from :meth:`Client.submit`
    goes on. :meth:`cancel` cancels the job explicitly.
    """

    def __init__(self, client: Client, plan: StreamPlan, events: Iterator[Event]) -> None:
        self._client = client
        self._plan = plan
        self._events = events

    @property
    def job_id(self) -> str | None:
        return self._plan.job_id

    def __iter__(self) -> JobStream:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """Ends the call (a Generate job is then cancelled by the gateway; a submitted one goes on)."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def cancel(self) -> bool:
        """Cancels the job (when its id is known yet) and stops listening."""
        cancelled = False
        if self.job_id:
            cancelled = self._client.cancel(self.job_id)
        self.close()
        return cancelled

    def result(self) -> Completed:
        """Reads the stream to its end: the image, or the failure raised as its exception."""
        for event in self:
            if isinstance(event, Completed):
                return event
            if isinstance(event, Failed):
                raise event.error()
        raise self._plan.ended_early()

    def __enter__(self) -> JobStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Client:
    """A blocking TALOS client over one gRPC channel. Thread-safe; close it when done.

    ``api_key`` defaults to ``$TALOS_API_KEY``, ``address`` to ``$TALOS_ADDRESS`` or
    127.0.0.1:50051. ``timeout`` is the deadline of each unary call, ``stream_timeout`` of
    a whole job stream. ``max_retries`` (default 0) opts in to retrying ``no_capacity`` and
    ``rate_limited`` after the server's retry-after; calls that did not reach the API are
    always retried (``connect_retries``) with the same idempotency key.
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
        channel: grpc.Channel | None = None,
    ) -> None:
        self.api_key = _core.resolve_api_key(api_key)
        self.address = _core.resolve_address(address)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.retry_policy = RetryPolicy(connect_retries=connect_retries, max_retries=max_retries)
        if channel is not None:
            self._channel = channel
        elif tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(self.address, credentials, options=_core.CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(self.address, options=_core.CHANNEL_OPTIONS)
        self._stub = api_pb2_grpc.ImageServiceStub(self._channel)

    # -- plumbing -------------------------------------------------------------------------

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

    def _unary(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None,
        needs_key: bool = True,
        max_retries: int | None = None,
        capacity_retries: bool = False,
        job_id: str | None = None,
    ) -> Any:
        metadata = self._metadata(needs_key)
        deadline = Deadline(timeout if timeout is not None else self.timeout)
        plan = UnaryPlan(self._policy(max_retries), deadline, capacity_retries=capacity_retries)
        while True:
            try:
                return method(request, metadata=metadata, timeout=max(0.001, deadline.remaining()))
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, job_id=job_id)
                delay = plan.delay_after(error)
                if delay is None:
                    raise error from None
                time.sleep(delay)

    # -- jobs -----------------------------------------------------------------------------

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
    ) -> JobStream:
        """Starts a job and returns its events: Queued*, Started, Progress*, then Completed or Failed.

        Errors before the job exists (bad key, invalid request, content policy, no
        credits...) raise from the first ``next()``; a job that fails later ends with a
        :class:`Failed` event (use :meth:`generate_image` to have it raised).
        """
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
        return JobStream(self, plan, self._stream(plan, request, metadata))

    def watch(self, job_id: str, *, timeout: float | None = None) -> JobStream:
        """Follows a job (from :meth:`submit`, or after a lost connection); replays its current state."""
        metadata = self._metadata()
        deadline = Deadline(timeout if timeout is not None else self.stream_timeout)
        plan = StreamPlan(self.retry_policy, deadline, job_id=job_id)
        return JobStream(self, plan, self._stream(plan, None, metadata))

    def _stream(self, plan: StreamPlan, request: Any, metadata: Any) -> Iterator[Event]:
        while True:
            call: Any = None
            try:
                remaining = max(0.001, plan.deadline.remaining())
                if plan.mode == "generate":
                    call = self._stub.Generate(request, metadata=metadata, timeout=remaining)
                else:
                    watch = api_pb2.WatchRequest(job_id=plan.job_id)
                    call = self._stub.Watch(watch, metadata=metadata, timeout=remaining)
                for message in call:
                    event = plan.accept(event_from_proto(message))
                    if event is None:
                        continue
                    if plan.terminal is not None:
                        _drain(call)
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
            time.sleep(delay)

    def generate_image(
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
        on_event: Callable[[Event], None] | None = None,
    ) -> Completed:
        """Generates one image and returns it (bytes, seed, credits charged, balance, size).

        A failed job raises its exception (:class:`OutputBlocked`, :class:`Timeout`...).
        ``on_event`` sees every event on the way, e.g. to show progress.
        """
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
        with stream:
            for event in stream:
                if on_event is not None:
                    on_event(event)
                if isinstance(event, Completed):
                    return event
                if isinstance(event, Failed):
                    raise event.error()
        raise stream._plan.ended_early()

    def submit(
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
        response = self._unary(
            self._stub.Submit, request, timeout=timeout, max_retries=max_retries, capacity_retries=True
        )
        return str(response.job_id)

    def cancel(self, job_id: str, *, timeout: float | None = None) -> bool:
        """Cancels a job this key owns; True when it was still running. Unknown ids raise NotFound."""
        response = self._unary(
            self._stub.Cancel, api_pb2.CancelRequest(job_id=job_id), timeout=timeout, job_id=job_id
        )
        return bool(response.cancelled)

    # -- account and options --------------------------------------------------------------

    def account(self, *, timeout: float | None = None) -> Account:
        """Balance, allowance and age confirmation of the key's account."""
        response = self._unary(self._stub.GetAccount, api_pb2.GetAccountRequest(), timeout=timeout)
        return Account.from_proto(response)

    def confirm_age(self, *, timeout: float | None = None) -> bool:
        """Records the one-time confirmation that the account holder is 18 or older."""
        response = self._unary(
            self._stub.ConfirmAge, api_pb2.ConfirmAgeRequest(confirm=True), timeout=timeout
        )
        return bool(response.age_confirmed)

    def options(self, *, timeout: float | None = None) -> Options:
        """Styles, sizes, ranges, output formats and price (needs no key)."""
        response = self._unary(
            self._stub.GetOptions, api_pb2.GetOptionsRequest(), timeout=timeout, needs_key=False
        )
        return Options.from_proto(response)

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _drain(call: Any) -> None:
    """Reads a stream to its end after the terminal event, so the server ends the call itself.

    Cancelling instead could reach the gateway before it has marked the result delivered.
    """
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass
