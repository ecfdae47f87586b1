"""The blocking client: ``Client(api_key).generate("a lighthouse at dusk", n=2).images``.

Only the I/O loops live here; what they decide (requests, retries, resume) is in ``_core``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self, Unpack

import grpc

from talos.api.v1 import api_pb2, api_pb2_grpc
from talos_sdk import _core
from talos_sdk._core import ClientOptions, JobOptions, StreamPlan
from talos_sdk._request import build_request
from talos_sdk.events import Completed, Event, Generation
from talos_sdk.models import Account, Options

__all__ = ["Client", "JobStream"]


class _Closing:
    """``with x:`` closes ``x`` at the end of the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class JobStream(_core.JobStreamBase, _Closing):
    """The events of one job, as an iterator. Ends after every image's terminal event.

    ``job_id`` is known from the first event on. Leaving the loop early (``break``, an
    exception, ``close()``) ends the call; the gateway then cancels a job started by
    :meth:`Client.stream` (the holds of its unfinished images are released), while a job from
    :meth:`Client.submit` goes on. :meth:`cancel` cancels the job explicitly.
    """

    def __init__(self, client: Client, plan: StreamPlan, events: Iterator[Event]) -> None:
        super().__init__(plan)
        self._client = client
        self._events = events

    def __iter__(self) -> JobStream:
        return self

    def __next__(self) -> Event:
        return self._seen(next(self._events))

    def close(self) -> None:
        """Ends the call (a streamed job is then cancelled by the gateway; a submitted one goes on)."""
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

    def result(self) -> Generation:
        """Reads the stream to its end: every image delivered and every image refunded.

        When no image was delivered, the first failure is raised as its exception instead.
        """
        return self._result(None)

    def _result(self, on_event: Callable[[Event], None] | None) -> Generation:
        for event in self:
            if on_event is not None:
                on_event(event)
        return self._generation()


class Client(_core.ClientBase, _Closing):
    """A blocking TALOS client over one gRPC channel. Thread-safe; close it when done.

    ``api_key`` defaults to ``$TALOS_API_KEY``, ``address`` to ``$TALOS_ADDRESS`` or
    127.0.0.1:50051. Keyword options (:class:`talos_sdk._core.ClientOptions`): ``tls=None``
    (TLS unless the address is loopback; ``$TALOS_TLS``), ``ca_file=None`` (PEM roots to trust
    instead of the system's; ``$TALOS_CA_FILE``), ``root_certificates=None`` (the same as
    bytes), ``timeout=30`` (the deadline of each unary call),
    ``stream_timeout=600`` (of a whole job stream), ``max_retries=0`` (opts in to retrying
    ``no_capacity`` and ``rate_limited`` after the server's retry-after) and
    ``connect_retries=3`` (calls that did not reach the API are always retried, with the same
    idempotency key).
    """

    def __init__(
        self,
        api_key: str | None = None,
        address: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(api_key, address, options, "Client")
        self._channel = channel if channel is not None else self._new_channel(grpc)
        self._stub = api_pb2_grpc.ImageServiceStub(self._channel)

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
        plan = self._unary_plan(timeout, max_retries, capacity_retries=capacity_retries, job_id=job_id)
        while True:
            try:
                return method(request, metadata=metadata, timeout=plan.call_timeout())
            except grpc.RpcError as exc:
                time.sleep(plan.retry_delay(plan.error(exc)))

    def _stream(self, plan: StreamPlan) -> Iterator[Event]:
        while True:
            call: Any = None
            try:
                call = plan.open(self._stub)
                for message in call:
                    event = plan.receive(message)
                    if event is None:
                        continue
                    if plan.done:
                        _drain(call)
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
            time.sleep(plan.retry_delay(error))

    # -- jobs -----------------------------------------------------------------------------

    def stream(
        self,
        prompt: str,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        **options: Unpack[JobOptions],
    ) -> JobStream:
        """Starts a job and returns its events: for each image Queued*, Started, Progress*, then
        Completed or Failed (they interleave when ``n`` > 1; each names its ``image``).

        ``options`` are those of :class:`talos_sdk._core.JobOptions` (negative_prompt, style,
        size, aspect_ratio, n, steps, guidance, seed, nsfw, output_format, output_compression,
        idempotency_key). Errors before the job exists (bad key, invalid request, content
        policy, no credits...) raise from the first ``next()``; an image that fails later ends
        with a :class:`Failed` event.
        """
        plan = self._job_plan(prompt, options, timeout, max_retries, "stream")
        return JobStream(self, plan, self._stream(plan))

    def watch(self, job_id: str, *, timeout: float | None = None) -> JobStream:
        """Follows a job (from :meth:`submit`, or after a lost connection); replays its current state."""
        plan = self._watch_plan(job_id, timeout)
        return JobStream(self, plan, self._stream(plan))

    def generate(
        self,
        prompt: str,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        on_event: Callable[[Event], None] | None = None,
        **options: Unpack[JobOptions],
    ) -> Generation:
        """Generates ``n`` images (options as :meth:`stream`) and returns them all.

        The :class:`Generation` lists the images delivered (``images``) and those refunded
        (``failed``, with their error code); when none was delivered, the first failure is
        raised (:class:`OutputBlocked`, :class:`Timeout`...). ``on_event`` sees every event on
        the way, e.g. to show progress.
        """
        stream = self.stream(prompt, timeout=timeout, max_retries=max_retries, **options)
        with stream:
            return stream._result(on_event)

    def generate_image(
        self,
        prompt: str,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        on_event: Callable[[Event], None] | None = None,
        **options: Unpack[JobOptions],
    ) -> Completed:
        """One image: ``generate(..., n=1).images[0]``; its failure is raised as its exception."""
        options = _core.single_image(options)
        result = self.generate(prompt, timeout=timeout, max_retries=max_retries, on_event=on_event, **options)
        return result.images[0]

    def submit(
        self,
        prompt: str,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        **options: Unpack[JobOptions],
    ) -> str:
        """Submits a job (options as :meth:`stream`) and returns its id at once; see :meth:`watch`."""
        request = build_request(prompt, options, where="submit")
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


def _drain(call: Any) -> None:
    """Reads a stream to its end after the last terminal event, so the server ends the call itself.

    Cancelling instead could reach the gateway before it has marked the result delivered.
    """
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass
