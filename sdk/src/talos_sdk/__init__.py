"""TALOS image generation client (gRPC) and the ``talos`` command line.

>>> from talos_sdk import Client
>>> with Client("tk_...") as client:                       # doctest: +SKIP
...     result = client.generate("a lighthouse at dusk", n=2, seed=7)
...     result.save("lighthouse.png")                      # lighthouse-0.png, lighthouse-1.png

Depends on grpcio and protobuf only. Sizes, styles, bounds, the price and the error codes are
those of the API contract, ``talos.api.v1.contract``, which ships with this package.
"""

from talos_sdk._channel import DEFAULT_ADDRESS
from talos_sdk._core import RetryPolicy
from talos_sdk._version import __version__
from talos_sdk.aio import AsyncClient, AsyncJobStream
from talos_sdk.client import Client, JobStream
from talos_sdk.errors import (
    AgeConfirmationRequired,
    AuthenticationError,
    ContentPolicyViolation,
    IdempotencyConflict,
    InsufficientCredits,
    InternalError,
    InvalidRequest,
    JobCancelled,
    NoCapacity,
    NotFound,
    OutputBlocked,
    PolicyRefusal,
    RateLimited,
    RequestTooLarge,
    ServiceUnavailable,
    TalosError,
    Timeout,
    TransientError,
)
from talos_sdk.events import Completed, Event, Failed, Generation, Progress, Queued, Started, numbered_path
from talos_sdk.models import Account, Allowance, FloatRange, IntRange, Options, Size, Style

__all__ = [
    "DEFAULT_ADDRESS",
    "Account",
    "AgeConfirmationRequired",
    "Allowance",
    "AsyncClient",
    "AsyncJobStream",
    "AuthenticationError",
    "Client",
    "Completed",
    "ContentPolicyViolation",
    "Event",
    "Failed",
    "FloatRange",
    "Generation",
    "IdempotencyConflict",
    "InsufficientCredits",
    "IntRange",
    "InternalError",
    "InvalidRequest",
    "JobCancelled",
    "JobStream",
    "NoCapacity",
    "NotFound",
    "Options",
    "OutputBlocked",
    "PolicyRefusal",
    "Progress",
    "Queued",
    "RateLimited",
    "RequestTooLarge",
    "RetryPolicy",
    "ServiceUnavailable",
    "Size",
    "Started",
    "Style",
    "TalosError",
    "Timeout",
    "TransientError",
    "__version__",
    "numbered_path",
]
