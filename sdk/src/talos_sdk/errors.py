"""The SDK's exceptions, one class per API error code, and how gRPC failures map to them.

The codes, and which of them are worth retrying, come from the API contract
(``talos.api.v1.contract.ERRORS``): a class names its code, takes ``retryable`` from there,
and a class for a code the contract does not declare fails at import.

The gateway answers a failed call with a gRPC status whose ``grpc-status-details-bin``
trailer holds a ``google.rpc.Status`` carrying one ``google.rpc.ErrorInfo``; its ``reason``
is the API error code (the same string as over HTTP). The SDK reads that trailer with the
wire-compatible twins in ``talos.api.v1.errors_pb2`` so it needs nothing beyond protobuf.
A failure without details (a dropped connection, a deadline spent on the client side) is
classified by its status code.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import grpc

from talos.api.v1 import contract, errors_pb2

__all__ = [
    "AgeConfirmationRequired",
    "AuthenticationError",
    "ContentPolicyViolation",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InternalError",
    "InvalidRequest",
    "JobCancelled",
    "NoCapacity",
    "NotFound",
    "OutputBlocked",
    "PolicyRefusal",
    "RateLimited",
    "RequestTooLarge",
    "ServiceUnavailable",
    "TalosError",
    "Timeout",
    "TransientError",
    "error_class",
    "error_for_code",
    "error_from_rpc",
]

_ERROR_INFO_TYPE = "google.rpc.ErrorInfo"
_DETAILS_KEY = "grpc-status-details-bin"
#: The exception class of each API error code; filled by ``class X(TalosError, code=...)``.
_BY_CODE: dict[str, type[TalosError]] = {}


class ErrorDetails(TypedDict, total=False):
    """What an error may carry besides its code and message (see :class:`TalosError`)."""

    retry_after: float | None
    field: str | None
    grpc_code: grpc.StatusCode | None
    job_id: str | None
    metadata: dict[str, str] | None
    transport: bool


class TalosError(Exception):
    """Any error the TALOS API reports. ``code`` is the API error code string."""

    #: The API error code this class stands for (subclasses set it).
    default_code = "internal"
    #: Whether the same request may succeed later without any change (from the contract).
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        field: str | None = None,
        grpc_code: grpc.StatusCode | None = None,
        job_id: str | None = None,
        metadata: dict[str, str] | None = None,
        transport: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.retry_after = retry_after
        self.field = field
        self.grpc_code = grpc_code
        self.job_id = job_id
        self.metadata = dict(metadata or {})
        #: True when gRPC itself failed (no API error details): a dropped connection, a
        #: refused dial, a deadline spent on this side. Such a call may not have reached the API.
        self.transport = transport

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:  # the class that stands for an API error code
            declared = contract.ERROR_BY_CODE.get(code)
            if declared is None:
                raise TypeError(f"{cls.__name__}: {code!r} is not an error code of the API contract")
            cls.default_code = code
            cls.retryable = declared.retryable
            _BY_CODE[code] = cls

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidRequest(TalosError, code="invalid_request"):
    """A parameter is out of range or unknown; ``field`` names it when the API said which."""


class RequestTooLarge(TalosError, code="request_too_large"):
    """The request exceeded the API's size limit."""


class AuthenticationError(TalosError, code="invalid_api_key"):
    """The API key is missing, unknown or revoked."""


class InsufficientCredits(TalosError, code="insufficient_credits"):
    """Not enough allowance and balance left to pay for an image."""


class PolicyRefusal(TalosError):
    """Base of the refusals of content policy: change the request, do not retry it as is."""


class ContentPolicyViolation(PolicyRefusal, code="content_policy_violation"):
    """The prompt hit the hard content limit; nothing was charged."""


class OutputBlocked(PolicyRefusal, code="output_blocked"):
    """The image was adult content while 18+ output was off; the hold was refunded."""


class AgeConfirmationRequired(PolicyRefusal, code="age_confirmation_required"):
    """``nsfw=True`` needs the account's one-time age confirmation first."""


class NotFound(TalosError, code="not_found"):
    """No such job for this key (another account's job ids answer this too)."""


class IdempotencyConflict(TalosError, code="idempotency_conflict"):
    """The idempotency key was already used with a different request."""


class JobCancelled(TalosError, code="cancelled"):
    """The job was cancelled before it finished; nothing was charged."""


class TransientError(TalosError):
    """Base of the failures that may pass if the same request is sent again later: the codes the
    contract marks retryable."""

    retryable = True


class RateLimited(TransientError, code="rate_limited"):
    """Too many requests or jobs at once for this key; wait ``retry_after`` seconds."""


class NoCapacity(TransientError, code="no_capacity"):
    """No render node can take the job now; nothing was charged. Wait ``retry_after`` seconds."""


class Timeout(TransientError, code="timeout"):
    """The job or the call ran out of time; a job that timed out was refunded."""


class ServiceUnavailable(TransientError, code="unavailable"):
    """The gateway (or a service behind it) could not be reached."""


class InternalError(TalosError, code="internal"):
    """The service failed unexpectedly; a job that failed this way was refunded."""


# A status without ErrorInfo comes from gRPC itself or a proxy, not from the API: what they mean
# by it. (The contract's own status of each code is for errors the API sends, with ErrorInfo.)
_BY_STATUS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.OUT_OF_RANGE: "invalid_request",
    grpc.StatusCode.UNAUTHENTICATED: "invalid_api_key",
    grpc.StatusCode.PERMISSION_DENIED: "invalid_api_key",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "idempotency_conflict",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "request_too_large",
    grpc.StatusCode.FAILED_PRECONDITION: "invalid_request",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.CANCELLED: "cancelled",
}


def error_class(code: str) -> type[TalosError]:
    """The exception class of an API error code; :class:`TalosError` for a code this SDK does not know."""
    return _BY_CODE.get(code, TalosError)


def error_for_code(code: str, message: str, **details: Unpack[ErrorDetails]) -> TalosError:
    """The exception for an API error code; an unknown code gives a plain :class:`TalosError`."""
    return error_class(code)(message, code=code, **details)


def _trailer(error: Any) -> bytes | None:
    try:
        trailing = error.trailing_metadata()
    except Exception:
        return None
    for key, value in trailing or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def _error_info(raw: bytes | None) -> tuple[str | None, errors_pb2.ErrorInfo | None]:
    """The status message and the first ErrorInfo in a details trailer, if it parses."""
    if not raw:
        return None, None
    try:
        status = errors_pb2.RpcStatus.FromString(raw)
    except Exception:  # a malformed trailer must not hide the real error
        return None, None
    for detail in status.details:
        if detail.type_url.rsplit("/", 1)[-1] != _ERROR_INFO_TYPE:
            continue
        try:
            return status.message, errors_pb2.ErrorInfo.FromString(detail.value)
        except Exception:
            continue
    return status.message, None


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_rpc(error: grpc.RpcError, *, job_id: str | None = None) -> TalosError:
    """The SDK exception for a failed gRPC call (sync or asyncio)."""
    status_code: grpc.StatusCode | None = None
    details = ""
    try:
        status_code = error.code()
        details = error.details() or ""
    except Exception:
        details = str(error)
    message, info = _error_info(_trailer(error))
    if info is not None and info.reason:
        meta = dict(info.metadata)
        return error_for_code(
            info.reason,
            message or details,
            retry_after=_seconds(meta.get("retry_after_seconds")),
            field=meta.get("field") or None,
            grpc_code=status_code,
            job_id=job_id,
            metadata=meta,
        )
    code = _BY_STATUS.get(status_code, "internal") if status_code is not None else "internal"
    return error_for_code(
        code,
        details or (status_code.name if status_code is not None else "call failed"),
        grpc_code=status_code,
        job_id=job_id,
        transport=True,
    )
