"""Typed answers of the SDK besides a job's events: the account and the options."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Account", "Allowance", "FloatRange", "IntRange", "Options", "Size", "Style"]


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
    #: Images per request.
    n: IntRange
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
            steps=_int_range(message.steps),
            n=_int_range(message.n),
            guidance=FloatRange(
                round(message.guidance.min, 4),
                round(message.guidance.max, 4),
                round(message.guidance.default, 4),
            ),
            price_per_image=int(message.price_per_image),
            output_formats=tuple(message.output_formats),
        )


def _int_range(message: Any) -> IntRange:
    return IntRange(int(message.min), int(message.max), int(message.default))
