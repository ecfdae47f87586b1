"""Typed results of the SDK: job events, the account and the options.

Every job streams zero or more :class:`Queued`, one :class:`Started`, :class:`Progress`
per denoising step, then exactly one terminal event, :class:`Completed` (charged) or
:class:`Failed` (refunded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from talos_sdk.errors import TalosError, error_for_code

__all__ = [
    "Account",
    "Allowance",
    "Completed",
    "Event",
    "Failed",
    "FloatRange",
    "ImageResult",
    "IntRange",
    "Options",
    "Progress",
    "Queued",
    "Size",
    "Started",
    "Style",
    "event_from_proto",
]


@dataclass(frozen=True)
class Queued:
    """The job waits for a free render node."""

    job_id: str
    #: 1-based place in the queue.
    position: int
    #: Estimated seconds until the job starts.
    eta_seconds: float


@dataclass(frozen=True)
class Started:
    """A render node began the job."""

    job_id: str


@dataclass(frozen=True)
class Progress:
    """One denoising step finished."""

    job_id: str
    #: Steps finished so far, 1-based.
    step: int
    total_steps: int
    #: A small JPEG preview on some steps, else None.
    preview_jpeg: bytes | None = field(default=None, repr=False)

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


@dataclass(frozen=True)
class Completed:
    """The finished image; this is what :meth:`Client.generate_image` returns."""

    job_id: str
    image: bytes = field(repr=False)
    #: png, webp or jpeg.
    output_format: str
    width: int
    height: int
    #: The seed used; the same request with this seed gives the same image.
    seed: int
    credits_charged: int
    #: Spendable credits left after the charge (allowance remaining plus balance).
    balance: int

    def save(self, path: str | Path) -> Path:
        """Writes the image bytes to ``path`` and returns it."""
        target = Path(path)
        target.write_bytes(self.image)
        return target


#: The result of a finished generation (the terminal :class:`Completed` event).
ImageResult = Completed


@dataclass(frozen=True)
class Failed:
    """The job ended without an image; its hold was released."""

    job_id: str
    #: The API error code, e.g. output_blocked, no_capacity, timeout, cancelled.
    code: str
    message: str
    refunded: bool = True

    def error(self) -> TalosError:
        """The exception that stands for this failure."""
        return error_for_code(self.code, self.message, job_id=self.job_id)


Event = Queued | Started | Progress | Completed | Failed


def event_from_proto(message: Any) -> Event | None:
    """Converts a ``talos.api.v1.JobEvent``; None for an event kind this SDK does not know."""
    kind = message.WhichOneof("event")
    job_id = message.job_id
    if kind == "queued":
        return Queued(job_id, int(message.queued.position), float(message.queued.eta_seconds))
    if kind == "started":
        return Started(job_id)
    if kind == "progress":
        p = message.progress
        return Progress(job_id, int(p.step), int(p.total_steps), bytes(p.preview_jpeg) or None)
    if kind == "completed":
        c = message.completed
        return Completed(
            job_id=job_id,
            image=bytes(c.image),
            output_format=c.output_format,
            width=int(c.width),
            height=int(c.height),
            seed=int(c.seed),
            credits_charged=int(c.credits_charged),
            balance=int(c.balance),
        )
    if kind == "failed":
        f = message.failed
        return Failed(job_id, f.error.code or "internal", f.error.message, bool(f.refunded))
    return None


@dataclass(frozen=True)
class Allowance:
    """A staker's daily allowance, spent before the balance."""

    daily: int
    remaining: int
    #: Next reset (00:00 UTC), or None when the API sent none.
    resets_at: datetime | None


@dataclass(frozen=True)
class Account:
    """The caller's account as the public API shows it."""

    account_id: str
    #: Credits on the balance, not counting the allowance.
    balance: int
    allowance: Allowance
    age_confirmed: bool
    price_per_image: int

    @property
    def spendable(self) -> int:
        """Allowance remaining plus balance."""
        return self.allowance.remaining + self.balance

    @classmethod
    def from_proto(cls, message: Any) -> Account:
        a = message.allowance
        resets_at: datetime | None = None
        if message.HasField("allowance") and a.HasField("resets_at"):
            resets_at = datetime.fromtimestamp(a.resets_at.seconds + a.resets_at.nanos / 1e9, tz=UTC)
        return cls(
            account_id=message.account_id,
            balance=int(message.balance),
            allowance=Allowance(int(a.daily), int(a.remaining), resets_at),
            age_confirmed=bool(message.age_confirmed),
            price_per_image=int(message.price_per_image),
        )


@dataclass(frozen=True)
class Style:
    """A style preset as the gateway applies it."""

    id: str
    name: str
    #: Template with a ``{prompt}`` slot.
    prompt_template: str
    negative_prompt: str
    default_guidance: float


@dataclass(frozen=True)
class Size:
    id: str
    width: int
    height: int
    #: square, portrait or landscape.
    aspect_ratio: str


@dataclass(frozen=True)
class IntRange:
    min: int
    max: int
    default: int


@dataclass(frozen=True)
class FloatRange:
    min: float
    max: float
    default: float


@dataclass(frozen=True)
class Options:
    """What a request may contain."""

    styles: tuple[Style, ...]
    sizes: tuple[Size, ...]
    steps: IntRange
    guidance: FloatRange
    price_per_image: int
    output_formats: tuple[str, ...]

    @classmethod
    def from_proto(cls, message: Any) -> Options:
        return cls(
            styles=tuple(
                Style(s.id, s.name, s.prompt_template, s.negative_prompt, round(s.default_guidance, 4))
                for s in message.styles
            ),
            sizes=tuple(Size(s.id, int(s.width), int(s.height), s.aspect_ratio) for s in message.sizes),
            steps=IntRange(int(message.steps.min), int(message.steps.max), int(message.steps.default)),
            guidance=FloatRange(
                round(message.guidance.min, 4),
                round(message.guidance.max, 4),
                round(message.guidance.default, 4),
            ),
            price_per_image=int(message.price_per_image),
            output_formats=tuple(message.output_formats),
        )
