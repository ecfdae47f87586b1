"""TALOS image generation client (gRPC) and the ``talos`` command line.

>>> from talos_sdk import Client
>>> with Client("tk_...") as client:                       # doctest: +SKIP
...     image = client.generate_image("a lighthouse at dusk", seed=7)
...     image.save("lighthouse.png")

Depends on grpcio and protobuf only.
"""

from talos_sdk._core import DEFAULT_ADDRESS, RetryPolicy, __version__
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
from talos_sdk.models import (
    Account,
    Allowance,
    Completed,
    Event,
    Failed,
    FloatRange,
    ImageResult,
    IntRange,
    Options,
    Progress,
    Queued,
    Size,
    Started,
    Style,
)

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
    "IdempotencyConflict",
    "ImageResult",
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
]
