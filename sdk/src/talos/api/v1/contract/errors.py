"""The public error codes, with their HTTP and gRPC statuses."""

from __future__ import annotations

from dataclasses import dataclass

# -- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCode:
    code: str
    http_status: int
    grpc_status: str  # a grpc.StatusCode name
    when: str
    charged: str  # what happened to the credits: "no", "refunded" or "no / refunded"
    retryable: bool = False


ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode(
        "invalid_request",
        400,
        "INVALID_ARGUMENT",
        "a field is missing, unknown, of the wrong type or out of bounds (the message names it); bad JSON",
        "no",
    ),
    ErrorCode(
        "content_policy_violation",
        400,
        "INVALID_ARGUMENT",
        "the prompt breaks the hard limit (no sexual content involving minors)",
        "no",
    ),
    ErrorCode("invalid_api_key", 401, "UNAUTHENTICATED", "missing, malformed, unknown or revoked key", "no"),
    ErrorCode(
        "insufficient_credits",
        402,
        "FAILED_PRECONDITION",
        "fewer spendable credits than 18 per image asked for",
        "no",
    ),
    ErrorCode(
        "age_confirmation_required",
        403,
        "PERMISSION_DENIED",
        "18+ output (nsfw, or moderation low) before the one-time age confirmation",
        "no",
    ),
    ErrorCode("not_found", 404, "NOT_FOUND", "no such job for this account; unknown path", "no"),
    ErrorCode(
        "idempotency_conflict", 409, "ALREADY_EXISTS", "the idempotency key was used with another body", "no"
    ),
    ErrorCode("request_too_large", 413, "RESOURCE_EXHAUSTED", "a body above the gateway's limit", "no"),
    ErrorCode("output_blocked", 422, "PERMISSION_DENIED", "adult output with 18+ off", "refunded"),
    ErrorCode(
        "rate_limited",
        429,
        "RESOURCE_EXHAUSTED",
        "per-key request rate, per-key jobs at once, or a moderation cooldown (with Retry-After)",
        "no",
        retryable=True,
    ),
    ErrorCode("cancelled", 499, "CANCELLED", "the job was cancelled (only in a failed event)", "refunded"),
    ErrorCode("internal", 500, "INTERNAL", "an unexpected error", "refunded"),
    ErrorCode(
        "no_capacity",
        503,
        "UNAVAILABLE",
        "no render node can take the job (with Retry-After), or the gateway is shutting down",
        "no",
        retryable=True,
    ),
    ErrorCode(
        "unavailable",
        503,
        "UNAVAILABLE",
        "billing or moderation cannot answer (fail closed)",
        "no / refunded",
        retryable=True,
    ),
    ErrorCode(
        "timeout",
        504,
        "DEADLINE_EXCEEDED",
        "the job took too long (queue wait, node time, or its hold expired)",
        "refunded",
        retryable=True,
    ),
)
ERROR_BY_CODE: dict[str, ErrorCode] = {error.code: error for error in ERRORS}
