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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import grpc

from talos.api.v1 import api_pb2
from talos_sdk.errors import (
    AuthenticationError,
    InvalidRequest,
    ServiceUnavailable,
    TalosError,
    error_from_rpc,
)
from talos_sdk.models import Completed, Event, Failed, Progress, Queued, Started, event_from_proto

__version__ = "0.1.0"

DEFAULT_ADDRESS = "127.0.0.1:50051"
ENV_API_KEY = "TALOS_API_KEY"
ENV_ADDRESS = "TALOS_ADDRESS"
#: Deadline of a unary call (account, options, submit, cancel, confirm_age), seconds.
DEFAULT_TIMEOUT = 30.0
#: Deadline of a whole job stream (queue wait plus render), seconds.
DEFAULT_STREAM_TIMEOUT = 600.0
MAX_IDEMPOTENCY_KEY = 255
_MiB = 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # A PNG of 1216x832 is close to gRPC's default 4 MiB receive limit.
    ("grpc.max_receive_message_length", 64 * _MiB),
    ("grpc.primary_user_agent", f"talos-sdk/{__version__}"),
]

_TRANSPORT_STATUSES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
_CAPACITY_CODES = {"no_capacity", "rate_limited"}


def resolve_address(address: str | None) -> str:
    return address or os.environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS


def resolve_api_key(api_key: str | None) -> str | None:
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    return key.strip() if key and key.strip() else None


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class JobOptions(TypedDict, total=False):
    """The keyword arguments of ``generate``, ``generate_image`` and ``submit`` (see docs/sdk.md)."""

    negative_prompt: str | None
    style: str | None
    size: str | None
    aspect_ratio: str | None
    steps: int | None
    guidance: float | None
    seed: int | None
    nsfw: bool
    output_format: str | None
    idempotency_key: str | None


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of ``Client`` and ``AsyncClient`` besides the key, address and channel."""

    tls: bool
    root_certificates: bytes | None
    #: Deadline of each unary call, seconds (default :data:`DEFAULT_TIMEOUT`).
    timeout: float
    #: Deadline of a whole job stream, seconds (default :data:`DEFAULT_STREAM_TIMEOUT`).
    stream_timeout: float
    max_retries: int
    connect_retries: int


def _check_keywords(given: Mapping[str, Any], allowed: type, where: str) -> None:
    """Raises TypeError for a keyword ``allowed`` (a TypedDict) does not name, as a signature would."""
    for name in given:
        if name not in allowed.__annotations__:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


def build_request(prompt: str, options: JobOptions, *, where: str = "generate") -> Any:
    """A ``talos.api.v1.GenerateRequest``; ranges are checked by the API, types here."""
    _check_keywords(options, JobOptions, where)
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string", field="prompt")
    idempotency_key = options.get("idempotency_key")
    key = idempotency_key if idempotency_key is not None else new_idempotency_key()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters", field="idempotency_key"
        )
    request = api_pb2.GenerateRequest(
        prompt=prompt,
        negative_prompt=options.get("negative_prompt") or "",
        style=options.get("style") or "",
        size=options.get("size") or "",
        aspect_ratio=options.get("aspect_ratio") or "",
        nsfw=bool(options.get("nsfw", False)),
        output_format=options.get("output_format") or "",
        idempotency_key=key,
    )
    steps, guidance, seed = options.get("steps"), options.get("guidance"), options.get("seed")
    try:
        if steps is not None:
            request.steps = _int("steps", steps)
        if guidance is not None:
            request.guidance = float(guidance)
        if seed is not None:
            request.seed = _int("seed", seed)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(str(exc)) from None
    return request


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer", field=name)
    if value < 0:
        raise InvalidRequest(f"{name} must not be negative", field=name)
    return value


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
    if error.code == "unavailable":
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
            and error.code in _CAPACITY_CODES
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
    """State of one job stream: what was delivered, and whether to resend or re-attach."""

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
        #: "generate" until the job exists somewhere, then "watch".
        self.mode = "watch" if job_id else "generate"
        self.delivered = False
        self.terminal: Event | None = None
        self.resumes = 0
        self._started = False
        self._queued: tuple[int, float] | None = None
        self._last_step = 0

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
        if event is None or self.terminal is not None:
            return None
        if self.job_id is None:
            self.job_id = event.job_id
        if isinstance(event, Queued):
            if self._started or self._queued == (event.position, event.eta_seconds):
                return None
            self._queued = (event.position, event.eta_seconds)
        elif isinstance(event, Started):
            if self._started:
                return None
            self._started = True
        elif isinstance(event, Progress):
            if event.step <= self._last_step:
                return None
            self._last_step = event.step
        else:
            self.terminal = event
        self.delivered = True
        self.resumes = 0
        return event

    def delay_after(self, error: TalosError) -> float | None:
        if self.mode == "generate" and not self.delivered:
            return super().delay_after(error)
        # The job exists: never submit it again; follow it with Watch after a broken stream.
        if not self.job_id or not is_transport(error) or self.resumes >= self.policy.connect_retries:
            return None
        self.resumes += 1
        self.mode = "watch"
        delay = self.policy.backoff(self.resumes)
        return delay if delay < self.deadline.remaining() else None

    def ended_early(self) -> TalosError:
        """The error for a stream that closed without a terminal event."""
        return ServiceUnavailable(
            "the job stream ended before the job finished", job_id=self.job_id, transport=True
        )

    @staticmethod
    def is_terminal(event: Event) -> bool:
        return isinstance(event, Completed | Failed)


def finished(event: Event) -> Completed | None:
    """The image of a Completed event; a Failed event raises its error; None for the others."""
    if isinstance(event, Completed):
        return event
    if isinstance(event, Failed):
        raise event.error()
    return None


class ClientBase:
    """Settings and per-call plans of :class:`~talos_sdk.Client` and :class:`~talos_sdk.AsyncClient`."""

    def __init__(self, api_key: str | None, address: str | None, options: ClientOptions, where: str) -> None:
        _check_keywords(options, ClientOptions, where)
        self.api_key = resolve_api_key(api_key)
        self.address = resolve_address(address)
        self.timeout = options.get("timeout", DEFAULT_TIMEOUT)
        self.stream_timeout = options.get("stream_timeout", DEFAULT_STREAM_TIMEOUT)
        self.retry_policy = RetryPolicy(
            connect_retries=options.get("connect_retries", 3),
            max_retries=options.get("max_retries", 0),
        )
        self._tls = options.get("tls", False)
        self._root_certificates = options.get("root_certificates")

    def _new_channel(self, module: Any) -> Any:
        """A channel from ``grpc`` or ``grpc.aio`` (creating one does not connect)."""
        if self._tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
            return module.secure_channel(self.address, credentials, options=CHANNEL_OPTIONS)
        return module.insecure_channel(self.address, options=CHANNEL_OPTIONS)

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
        self, prompt: str, options: JobOptions, timeout: float | None, max_retries: int | None
    ) -> StreamPlan:
        """The plan of a new job's stream (Generate, then Watch after a break)."""
        request = build_request(prompt, options, where="generate")
        metadata = self._metadata()
        deadline = Deadline(timeout if timeout is not None else self.stream_timeout)
        return StreamPlan(self._policy(max_retries), deadline, request=request, metadata=metadata)

    def _watch_plan(self, job_id: str, timeout: float | None) -> StreamPlan:
        metadata = self._metadata()
        deadline = Deadline(timeout if timeout is not None else self.stream_timeout)
        return StreamPlan(self.retry_policy, deadline, metadata=metadata, job_id=job_id)


class JobStreamBase:
    """What a job's stream knows without reading it: the plan, hence the job id once known."""

    def __init__(self, plan: StreamPlan) -> None:
        self._plan = plan

    @property
    def job_id(self) -> str | None:
        return self._plan.job_id
