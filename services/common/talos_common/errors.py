"""One table that maps TALOS error codes to gRPC status codes and HTTP statuses.

The public codes come from the API contract (``talos.api.v1.contract.ERRORS``).

Services raise :class:`TalosError`; the server interceptor turns it into a gRPC status
carrying a ``google.rpc.ErrorInfo`` whose ``reason`` is the code, and the gateway maps
codes back to HTTP with the same table. Clients read the code, never parse messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from talos.api.v1 import contract

DOMAIN = "talos"


@dataclass(frozen=True)
class ErrorKind:
    grpc_code: grpc.StatusCode
    http_status: int
    # A job that ends with this error has its hold released (always true once reserved).
    retryable: bool = False


# The public codes as the API contract declares them, and two the mesh keeps to itself.
ERRORS: dict[str, ErrorKind] = {
    error.code: ErrorKind(grpc.StatusCode[error.grpc_status], error.http_status, error.retryable)
    for error in contract.ERRORS
} | {
    # Internal to the mesh; the gateway never shows these to a client as they are.
    "hold_expired": ErrorKind(grpc.StatusCode.FAILED_PRECONDITION, 409),
    "unimplemented": ErrorKind(grpc.StatusCode.UNIMPLEMENTED, 501),
}

# What a bare gRPC status (without ErrorInfo) means, for errors raised by gRPC itself.
_FROM_GRPC: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.UNAUTHENTICATED: "invalid_api_key",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "request_too_large",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.CANCELLED: "cancelled",
    grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
}


class TalosError(Exception):
    """A domain error with a code from :data:`ERRORS` and a message fit for a person."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        field: str | None = None,
    ) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.field = field

    @property
    def kind(self) -> ErrorKind:
        return ERRORS[self.code]

    def metadata(self) -> dict[str, str]:
        meta: dict[str, str] = {}
        if self.retry_after is not None:
            meta["retry_after_seconds"] = str(max(1, round(self.retry_after)))
        if self.field is not None:
            meta["field"] = self.field
        return meta

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason=self.code, domain=DOMAIN, metadata=self.metadata())
        detail = any_pb2.Any()
        detail.Pack(info)
        proto = status_pb2.Status(code=self.kind.grpc_code.value[0], message=self.message, details=[detail])
        return rpc_status.to_status(proto)

    def __repr__(self) -> str:
        return f"TalosError({self.code!r}, {self.message!r})"


def from_rpc_error(error: grpc.RpcError) -> TalosError:
    """Reads the TALOS code back from a failed call (ErrorInfo first, status code second)."""
    status = None
    try:
        status = rpc_status.from_call(error)
    except Exception:  # a malformed details trailer must not hide the real error
        status = None
    message = error.details() if hasattr(error, "details") else str(error)
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == DOMAIN and info.reason in ERRORS:
                retry = info.metadata.get("retry_after_seconds")
                return TalosError(
                    info.reason,
                    status.message,
                    retry_after=float(retry) if retry else None,
                    field=info.metadata.get("field"),
                )
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    return TalosError(_FROM_GRPC.get(code, "internal"), message or str(code))
