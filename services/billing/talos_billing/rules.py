"""The ledger's rules as plain values and arithmetic: no database, no clock, no I/O.

A hold takes one image's price from an account, the staker daily allowance first and then
the balance. A hold ends once: captured (the credits become revenue), released, or expired
(both return the credits: balance to the balance, allowance to the UTC day it came from; a
day that has passed is gone). Every operation that moves credits is written to the ledger
as *postings* whose amounts sum to zero: user accounts are ledger accounts named by their id,
the counterparties are the system accounts below.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

DAY_MS = 86_400_000

# System ledger accounts (user account ids never contain a colon).
SYS_GRANTS = "sys:grants"  # where granted credits come from
SYS_ALLOWANCE = "sys:allowance"  # where daily allowance credits come from and return to
SYS_HOLDS = "sys:holds"  # credits held for jobs in flight
SYS_REVENUE = "sys:revenue"  # credits charged for delivered images


class HoldState(enum.IntEnum):
    """A hold's state, numbered as talos.billing.v1.HoldState (the numbers are also stored)."""

    HELD = 1
    CAPTURED = 2
    RELEASED = 3
    EXPIRED = 4


class OpKind(enum.StrEnum):
    """What a ledger operation does; every change to credits or an account is one of these."""

    RESERVE = "reserve"
    RESERVE_MANY = "reserve_many"
    CAPTURE = "capture"
    RELEASE = "release"
    EXPIRE = "expire"
    GRANT = "grant"
    SET_ALLOWANCE = "set_allowance"
    CONFIRM_AGE = "confirm_age"


class EntryKind(enum.StrEnum):
    """The ``kind`` of a ledger entry: the operation whose postings it is."""

    RESERVE = "reserve"
    CAPTURE = "capture"
    RELEASE = "release"
    EXPIRE = "expire"
    GRANT = "grant"


# The text stored in the ledger's ``kind`` column (an enum's ``.value`` costs a descriptor call).
_ENTRY_TEXT: Mapping[EntryKind, str] = {kind: kind.value for kind in EntryKind}

# The one place a hold's state changes: which operation sends a hold from which state to
# which. A reserve creates a hold HELD; a pair missing here leaves the hold as it is (a
# resolved hold stays resolved for good, so retries are answered, never applied twice).
TRANSITIONS: Mapping[tuple[HoldState, OpKind], HoldState] = MappingProxyType(
    {
        (HoldState.HELD, OpKind.CAPTURE): HoldState.CAPTURED,
        (HoldState.HELD, OpKind.RELEASE): HoldState.RELEASED,
        (HoldState.HELD, OpKind.EXPIRE): HoldState.EXPIRED,
    }
)

# The ledger entry each transition posts.
TRANSITION_ENTRY: Mapping[HoldState, EntryKind] = MappingProxyType(
    {
        HoldState.CAPTURED: EntryKind.CAPTURE,
        HoldState.RELEASED: EntryKind.RELEASE,
        HoldState.EXPIRED: EntryKind.EXPIRE,
    }
)


def next_state(state: HoldState, op: OpKind) -> HoldState | None:
    """The state ``op`` sends a hold in ``state`` to; None when it leaves the hold as it is."""
    return TRANSITIONS.get((state, op))


# -- what callers get back ---------------------------------------------------------------
@dataclass(frozen=True)
class AccountView:
    account_id: str
    balance: int
    daily_allowance: int
    allowance_remaining: int
    allowance_resets_at: float  # seconds since the epoch: the next 00:00 UTC
    age_confirmed: bool


@dataclass(frozen=True)
class HoldView:
    job_id: str
    account_id: str
    amount: int
    from_allowance: int
    from_balance: int
    state: HoldState
    expires_at: float  # seconds since the epoch
    allowance_day: int
    reason: str | None


def day_of(now_ms: int) -> int:
    """The UTC day (days since the epoch) of a time in milliseconds."""
    return now_ms // DAY_MS


def allowance_left(daily_allowance: int, allowance_day: int, allowance_used: int, day: int) -> int:
    """Allowance credits still spendable on ``day`` (what was used counts only on its own day)."""
    used = allowance_used if allowance_day == day else 0
    return max(0, daily_allowance - used)


def account_view(
    account_id: str,
    balance: int,
    daily_allowance: int,
    allowance_day: int,
    allowance_used: int,
    age_confirmed_at: int | None,
    day: int,
) -> AccountView:
    return AccountView(
        account_id=account_id,
        balance=balance,
        daily_allowance=daily_allowance,
        allowance_remaining=allowance_left(daily_allowance, allowance_day, allowance_used, day),
        allowance_resets_at=(day + 1) * DAY_MS / 1000.0,
        age_confirmed=age_confirmed_at is not None,
    )


# -- the arithmetic ----------------------------------------------------------------------
class Split(NamedTuple):
    """Where one hold's credits come from."""

    from_allowance: int
    from_balance: int

    @property
    def amount(self) -> int:
        return self.from_allowance + self.from_balance


def split_prices(price: int, count: int, allowance: int) -> list[Split]:
    """``count`` holds of ``price`` taken one after another: each drains the allowance first."""
    splits = []
    for _ in range(count):
        from_allowance = min(price, allowance)
        allowance -= from_allowance
        splits.append(Split(from_allowance, price - from_allowance))
    return splits


Leg = tuple[str, int]  # (ledger account, amount): one line of a posting


class Posting(NamedTuple):
    """One operation's ledger entries; its legs must sum to zero (checked before it is written)."""

    txn: str
    kind: EntryKind
    job_id: str | None
    legs: tuple[Leg, ...]

    def entries(self, at_ms: int) -> list[dict[str, Any]]:
        """The ledger rows (legs of zero are left out: they move nothing)."""
        if sum(amount for _, amount in self.legs) != 0:
            raise ValueError(f"posting {self.txn} does not sum to zero: {self.legs}")
        kind = _ENTRY_TEXT[self.kind]
        return [
            {
                "txn": self.txn,
                "kind": kind,
                "account": account,
                "amount": amount,
                "job_id": self.job_id,
                "at": at_ms,
            }
            for account, amount in self.legs
            if amount
        ]


def _job_txn(kind: EntryKind, job_id: str) -> str:
    """A job's operation id (``capture:<job id>``): at most one of each kind per job."""
    return _ENTRY_TEXT[kind] + ":" + job_id


def reserve_posting(job_id: str, account_id: str, split: Split) -> Posting:
    """Credits leave the account (balance part) and the allowance, and wait in the holds."""
    legs = (
        (account_id, -split.from_balance),
        (SYS_ALLOWANCE, -split.from_allowance),
        (SYS_HOLDS, split.amount),
    )
    return Posting(_job_txn(EntryKind.RESERVE, job_id), EntryKind.RESERVE, job_id, legs)


def resolve_posting(job_id: str, account_id: str, split: Split, state: HoldState) -> Posting:
    """A hold's end: captured credits become revenue; released or expired ones go back."""
    kind = TRANSITION_ENTRY[state]
    if kind is EntryKind.CAPTURE:
        legs: tuple[Leg, ...] = ((SYS_HOLDS, -split.amount), (SYS_REVENUE, split.amount))
    else:
        legs = (
            (SYS_HOLDS, -split.amount),
            (account_id, split.from_balance),
            (SYS_ALLOWANCE, split.from_allowance),
        )
    return Posting(_job_txn(kind, job_id), kind, job_id, legs)


def grant_posting(txn: str, account_id: str, credits: int) -> Posting:
    """Credits granted by the operator, out of the grants account."""
    return Posting(txn, EntryKind.GRANT, None, ((SYS_GRANTS, -credits), (account_id, credits)))
