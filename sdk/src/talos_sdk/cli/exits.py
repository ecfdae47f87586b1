"""The ``talos`` command's exit codes: one per kind of failure, from the SDK's exception classes.

The codes each exit code stands for are listed from the API contract's error table, so the
help text and docs/sdk.md cannot disagree with the classes.
"""

from __future__ import annotations

from talos.api.v1 import contract
from talos_sdk.errors import (
    AuthenticationError,
    InsufficientCredits,
    InvalidRequest,
    PolicyRefusal,
    RequestTooLarge,
    TalosError,
    error_class,
)

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_POLICY = 3
EXIT_ACCOUNT = 4
EXIT_TRANSIENT = 5
EXIT_PARTIAL = 6
EXIT_INTERRUPTED = 130

# What each exit code means; the API codes behind it are appended from the contract.
MEANINGS: dict[int, str] = {
    EXIT_OK: "success: every image was delivered and written",
    EXIT_OTHER: "other failure, or a file that cannot be written",
    EXIT_USAGE: "usage error: bad arguments, no API key",
    EXIT_POLICY: "policy refusal",
    EXIT_ACCOUNT: "credits or key",
    EXIT_TRANSIENT: "transient, worth retrying later",
    EXIT_PARTIAL: "some images were delivered and written, the others refunded (listed)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C; a running job is cancelled)",
}


def exit_code_for_class(cls: type[TalosError]) -> int:
    if issubclass(cls, InvalidRequest | RequestTooLarge):
        return EXIT_USAGE
    if issubclass(cls, PolicyRefusal):
        return EXIT_POLICY
    if issubclass(cls, InsufficientCredits | AuthenticationError):
        return EXIT_ACCOUNT
    if cls.retryable:
        return EXIT_TRANSIENT
    return EXIT_OTHER


def exit_code_for(error: TalosError) -> int:
    """The documented exit code for an API error."""
    return exit_code_for_class(error_class(error.code))


def codes_by_exit() -> dict[int, list[str]]:
    """The contract's error codes under the exit code each one gives."""
    grouped: dict[int, list[str]] = {code: [] for code in MEANINGS}
    for error in contract.ERRORS:
        grouped[exit_code_for_class(error_class(error.code))].append(error.code)
    return grouped


def exit_codes_text() -> str:
    lines = ["exit codes:"]
    for code, codes in codes_by_exit().items():
        listed = f"; API codes: {', '.join(codes)}" if codes else ""
        lines.append(f"  {code:<4} {MEANINGS[code]}{listed}")
    return "\n".join(lines)
