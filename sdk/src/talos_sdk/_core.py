"""What the blocking and the asyncio clients share: everything that neither blocks nor awaits.

:mod:`talos_sdk.client` and :mod:`talos_sdk.aio` keep only their I/O loops (calling the stub,
iterating a stream, sleeping); settings, requests, retry decisions, event translation, resume
bookkeeping and error mapping live here.

Retry rules (none of them can charge twice):

* Every Generate and Submit carries an idempotency key (a fresh uuid4 when the caller gave
  none), so when the gateway cannot be reached or the connection drops before any event,
  sending the same request again returns the same job instead of a second one.
* ``no_capacity`` and ``rate_limited`` happen before anything is reserved; they are retried
  only when the caller opts in with ``max_retries``, waiting the server's ``retry_after``
  (capped) or an exponential back-off.
* Once a job has sent an event it exists; it is never submitted again. If its stream breaks,
  the client follows the same job with Watch (which never charges) and skips events it has
  already delivered.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, TypedDict

import grpc

from talos.api.v1 import api_pb2
from talos_sdk import _channel
from talos_sdk._request import JobOptions, build_request, check_keywords, images_requested
from talos_sdk._version import __version__
from talos_sdk.errors import (
    AuthenticationError,
    NoCapacity,
    RateLimited,
    ServiceUnavailable,
    TalosError,
    error_from_rpc,
)
from talos_sdk.events import (
    Collector,
    Completed,
    Event,
    Failed,
    Generation,
    Progress,
    Queued,
    Started,
    event_from_proto,
)

ENV_API_KEY = "TALOS_API_KEY"
#: Deadline of a unary call (account, options, submit, cancel, confirm_age), seconds.
DEFAULT_TIMEOUT = 30.0
#: Deadline of a whole job stream (queue wait plus render of every image), seconds.
DEFAULT_STREAM_TIMEOUT = 600.0
_MiB = 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # A PNG of the largest size is close to gRPC's default 4 MiB receive limit (api.md: the
    # gateway sends images up to 32 MiB).
    ("grpc.max_receive_message_length", 64 * _MiB),
    ("grpc.primary_user_agent", f"talos-sdk/{__version__}"),
]

_TRANSPORT_STATUSES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def resolve_api_key(api_key: str | None) -> str | None:
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    return key.strip() if key and key.strip() else None


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of ``Client`` and ``AsyncClient`` besides the key, address and channel."""

    #: True: TLS; False: plaintext (explicitly); None: ``$TALOS_TLS``, else TLS unless the
    #: address is loopback.
    tls: bool | None
    #: PEM root certificates to trust instead of the system's (default ``$TALOS_CA_FILE``).
    ca_file: str | os.PathLike[str] | None
    #: The same as PEM bytes.
    root_certificates: bytes | None
    #: Deadline of each unary call, seconds (default :data:`DEFAULT_TIMEOUT`).
    timeout: float
    #: Deadline of a whole job stream, seconds (default :data:`DEFAULT_STREAM_TIMEOUT`).
    stream_timeout: float
    max_retries: int
    connect_retries: int


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long the client retries (see the module docstring)."""

    #: Automatic retries of a call that did not reach the API (same idempotency key), and
    #: automatic re-attachments (Watch) to a job whose stream broke.
    connect_retries: int = 3
    #: Opt-in retries of no_capacity / rate_limited (nothing was reserved). 0 = never.
    max_retries: int = 0
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    #: Upper bound of one wait asked for by the server's retry_after.
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.initial_backoff * (2 ** max(0, attempt - 1))))


def is_transport(error: TalosError) -> bool:
    """The call may not have reached the API, or its stream broke: safe to send again."""
    if isinstance(error, ServiceUnavailable):
        return True
    return error.transport and error.grpc_code in _TRANSPORT_STATUSES


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()


class UnaryPlan:
    """Retry decisions for one unary call."""

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: Deadline,
        *,
        capacity_retries: bool,
        job_id: str | None = None,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self.capacity_retries = capacity_retries
        self.job_id = job_id
        self.connect_attempts = 0
        self.capacity_attempts = 0

    def call_timeout(self) -> float:
        """The timeout of the next attempt: what is left of the deadline."""
        return max(0.001, self.deadline.remaining())

    def error(self, exc: grpc.RpcError) -> TalosError:
        """The SDK exception for a failed attempt."""
        return error_from_rpc(exc, job_id=self.job_id)

    def retry_delay(self, error: TalosError) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when there is none."""
        delay = self.delay_after(error)
        if delay is None:
            raise error from None
        return delay

    def delay_after(self, error: TalosError) -> float | None:
        """Seconds to wait before sending again, or None to give up and raise ``error``."""
        delay: float | None = None
        if is_transport(error) and self.connect_attempts < self.policy.connect_retries:
            self.connect_attempts += 1
            delay = self.policy.backoff(self.connect_attempts)
        elif (
            self.capacity_retries
            and isinstance(error, NoCapacity | RateLimited)
            and self.capacity_attempts < self.policy.max_retries
        ):
            self.capacity_attempts += 1
            delay = self.policy.backoff(self.capacity_attempts)
            if error.retry_after is not None:
                delay = max(delay, min(error.retry_after, self.policy.max_retry_after))
        if delay is None or delay >= self.deadline.remaining():
            return None
        return delay


class StreamPlan(UnaryPlan):
    """State of one job stream: what each image has shown, and whether to resend or re-attach.

    A reconnect replays each image's latest queued or started event, its latest progress and
    its end; what the caller has already seen is skipped, image by image.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: Deadline,
        *,
        request: Any = None,
        metadata: tuple[tuple[str, str], ...] = (),
        job_id: str | None = None,
    ) -> None:
        super().__init__(policy, deadline, capacity_retries=True, job_id=job_id)
        #: The GenerateRequest of a new job (None when following one with Watch only).
        self.request = request
        self.metadata = metadata
        #: Images of the job, when this side knows (it does not when only watching).
        self.images: int | None = images_requested(request) if request is not None else None
        #: "generate" until the job exists somewhere, then "watch".
        self.mode = "watch" if job_id else "generate"
        #: Whether any event of the job came back: from then on it is never submitted again.
        self.received = False
        #: The terminal event of each image that has ended.
        self.ended: dict[int, Completed | Failed] = {}
        self.resumes = 0
        self._started: set[int] = set()
        self._queued: dict[int, tuple[int, float]] = {}
        self._last_step: dict[int, int] = {}

    @property
    def done(self) -> bool:
        """Every image of the job has ended (known only when the request was sent from here)."""
        return self.images is not None and len(self.ended) >= self.images

    def open(self, stub: Any) -> Any:
        """Starts the next attempt's call (Generate, or Watch once the job exists); does not block."""
        if self.mode == "generate":
            return stub.Generate(self.request, metadata=self.metadata, timeout=self.call_timeout())
        watch = api_pb2.WatchRequest(job_id=self.job_id)
        return stub.Watch(watch, metadata=self.metadata, timeout=self.call_timeout())

    def receive(self, message: Any) -> Event | None:
        """Translates a ``JobEvent`` and keeps it only when it is new (see :meth:`accept`)."""
        return self.accept(event_from_proto(message))

    def accept(self, event: Event | None) -> Event | None:
        """The event to hand to the caller, or None for an unknown kind or a replayed duplicate."""
        if event is None or self.done or event.image in self.ended:
            return None
        if self.job_id is None:
            self.job_id = event.job_id
        image = event.image
        if isinstance(event, Queued):
            if image in self._started or self._queued.get(image) == (event.position, event.eta_seconds):
                return None
            self._queued[image] = (event.position, event.eta_seconds)
        elif isinstance(event, Started):
            if image in self._started:
                return None
            self._started.add(image)
        elif isinstance(event, Progress):
            if event.step <= self._last_step.get(image, 0):
                return None
            self._last_step[image] = event.step
        else:
            self.ended[image] = event
        self.received = True
        self.resumes = 0
        return event

    def finished_by_server(self) -> bool:
        """After the server ended a stream with OK: True when that was the job's end.

        The gateway ends a job's stream only after every image has ended; an image delivered to
        another watcher of the same job is not replayed, so its end may never come here.
        """
        return self.done or bool(self.ended)

    def delay_after(self, error: TalosError) -> float | None:
        if self.mode == "generate" and not self.received:
            return super().delay_after(error)
        # The job exists: never submit it again; follow it with Watch after a broken stream.
        if not self.job_id or not is_transport(error) or self.resumes >= self.policy.connect_retries:
            return None
        self.resumes += 1
        self.mode = "watch"
        delay = self.policy.backoff(self.resumes)
        return delay if delay < self.deadline.remaining() else None

    def ended_early(self) -> TalosError:
        """The error for a stream that closed before the job's end."""
        return ServiceUnavailable(
            "the job stream ended before the job finished", job_id=self.job_id, transport=True
        )


class ClientBase:
    """Settings and per-call plans of :class:`~talos_sdk.Client` and :class:`~talos_sdk.AsyncClient`."""

    def __init__(self, api_key: str | None, address: str | None, options: ClientOptions, where: str) -> None:
        check_keywords(options, ClientOptions, where)
        self.api_key = resolve_api_key(api_key)
        self.address = _channel.resolve_address(address)
        self.timeout = options.get("timeout", DEFAULT_TIMEOUT)
        self.stream_timeout = options.get("stream_timeout", DEFAULT_STREAM_TIMEOUT)
        self.retry_policy = RetryPolicy(
            connect_retries=options.get("connect_retries", 3),
            max_retries=options.get("max_retries", 0),
        )
        self._tls = options.get("tls")
        self._ca_file = options.get("ca_file")
        self._root_certificates = options.get("root_certificates")
        self._transport: _channel.Transport | None = None

    @property
    def transport(self) -> _channel.Transport:
        """TLS or plaintext, and the roots trusted (see :mod:`talos_sdk._channel`)."""
        if self._transport is None:
            self._transport = _channel.resolve_transport(
                self.address, self._tls, self._ca_file, self._root_certificates
            )
        return self._transport

    def _new_channel(self, module: Any) -> Any:
        """A channel from ``grpc`` or ``grpc.aio`` (creating one does not connect)."""
        return _channel.new_channel(module, self.address, self.transport, CHANNEL_OPTIONS)

    def _metadata(self, needs_key: bool = True) -> tuple[tuple[str, str], ...]:
        if needs_key and not self.api_key:
            raise AuthenticationError(
                f"no API key: pass api_key or set {ENV_API_KEY}", code="invalid_api_key"
            )
        return auth_metadata(self.api_key)

    def _policy(self, max_retries: int | None) -> RetryPolicy:
        if max_retries is None:
            return self.retry_policy
        return RetryPolicy(connect_retries=self.retry_policy.connect_retries, max_retries=max_retries)

    def _unary_plan(
        self,
        timeout: float | None,
        max_retries: int | None,
        *,
        capacity_retries: bool,
        job_id: str | None,
    ) -> UnaryPlan:
        deadline = Deadline(timeout if timeout is not None else self.timeout)
        policy = self._policy(max_retries)
        return UnaryPlan(policy, deadline, capacity_retries=capacity_retries, job_id=job_id)

    def _job_plan(
        self, prompt: str, options: JobOptions, timeout: float | None, max_retries: int | None, where: str
    ) -> StreamPlan:
        """The plan of a new job's stream (Generate, then Watch after a break)."""
        request = build_request(prompt, options, where=where)
        metadata = self._metadata()
        deadline = Deadline(timeout if timeout is not None else self.stream_timeout)
        return StreamPlan(self._policy(max_retries), deadline, request=request, metadata=metadata)

    def _watch_plan(self, job_id: str, timeout: float | None) -> StreamPlan:
        metadata = self._metadata()
        deadline = Deadline(timeout if timeout is not None else self.stream_timeout)
        return StreamPlan(self.retry_policy, deadline, metadata=metadata, job_id=job_id)


def single_image(options: JobOptions) -> JobOptions:
    """The options of ``generate_image``: one image, whatever the API's default."""
    if options.get("n") not in (None, 1):
        raise TypeError("generate_image() makes one image; use generate(..., n=N) for several")
    return {**options, "n": 1}


class JobStreamBase:
    """What a job's stream knows besides its events: the plan (hence the job id once known) and
    the images ended so far, whoever read them."""

    def __init__(self, plan: StreamPlan) -> None:
        self._plan = plan
        self._collector = Collector()

    @property
    def job_id(self) -> str | None:
        return self._plan.job_id

    def _seen(self, event: Event) -> Event:
        self._collector.add(event)
        return event

    def _generation(self) -> Generation:
        """The result once the stream has ended (see :meth:`Collector.generation`)."""
        if not self._plan.ended:
            raise self._plan.ended_early()
        return self._collector.generation(self._plan.job_id)
