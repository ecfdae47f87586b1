"""A batch's books: working copies of accounts and holds, and the operations applied to them.

Pure Python, no database: the batch engine (:mod:`talos_billing.batching`) reads the rows a
batch touches into :class:`Account` and :class:`Hold`, applies each :class:`Operation` here
one after another, exactly as if each were alone, then writes back what is ``dirty`` and
the ledger entries. An operation's answer is the state right after it, or the
:class:`TalosError` it ends with (which changes nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from talos_billing.rules import (
    AccountView,
    HoldState,
    HoldView,
    OpKind,
    Posting,
    Split,
    account_view,
    allowance_left,
    day_of,
    grant_posting,
    next_state,
    reserve_posting,
    resolve_posting,
    split_prices,
)
from talos_common.errors import TalosError

# A log line a batch leaves for after its commit: (level, message, extra).
Note = tuple[int, str, dict[str, Any]]
# What reserve, capture, release and expire answer.
HoldAnswer = tuple[HoldView, AccountView]


class Account:
    """An account as a batch sees it; ``dirty`` once the batch changed it."""

    __slots__ = (
        "age_confirmed_at",
        "allowance_day",
        "allowance_used",
        "balance",
        "daily_allowance",
        "dirty",
        "id",
    )

    def __init__(
        self,
        id: str,
        balance: int,
        daily_allowance: int,
        allowance_day: int,
        allowance_used: int,
        age_confirmed_at: int | None = None,
    ) -> None:
        self.id = id
        self.balance = balance
        self.daily_allowance = daily_allowance
        self.allowance_day = allowance_day
        self.allowance_used = allowance_used
        self.age_confirmed_at = age_confirmed_at
        self.dirty = False

    def allowance_left(self, day: int) -> int:
        return allowance_left(self.daily_allowance, self.allowance_day, self.allowance_used, day)

    def view(self, day: int) -> AccountView:
        return account_view(
            self.id,
            self.balance,
            self.daily_allowance,
            self.allowance_day,
            self.allowance_used,
            self.age_confirmed_at,
            day,
        )


class Hold:
    """A hold as a batch sees it; ``is_new`` when the batch made it, ``dirty`` when it changed it."""

    __slots__ = (
        "account_id",
        "allowance_day",
        "amount",
        "created_at",
        "dirty",
        "expires_at",
        "from_allowance",
        "from_balance",
        "is_new",
        "job_id",
        "reason",
        "resolved_at",
        "state",
    )

    def __init__(
        self,
        job_id: str,
        account_id: str,
        amount: int,
        from_allowance: int,
        from_balance: int,
        allowance_day: int,
        state: HoldState,
        created_at: int,
        expires_at: int,
        resolved_at: int | None = None,
        reason: str | None = None,
        is_new: bool = False,
    ) -> None:
        self.job_id = job_id
        self.account_id = account_id
        self.amount = amount
        self.from_allowance = from_allowance
        self.from_balance = from_balance
        self.allowance_day = allowance_day
        self.state = state
        self.created_at = created_at
        self.expires_at = expires_at
        self.resolved_at = resolved_at
        self.reason = reason
        self.is_new = is_new
        self.dirty = False

    @property
    def split(self) -> Split:
        return Split(self.from_allowance, self.from_balance)

    def view(self) -> HoldView:
        return HoldView(
            self.job_id,
            self.account_id,
            self.amount,
            self.from_allowance,
            self.from_balance,
            self.state,
            self.expires_at / 1000.0,
            self.allowance_day,
            self.reason,
        )


class Operation(NamedTuple):
    """One request to change the books; which fields matter depends on ``kind``."""

    kind: OpKind
    job_ids: tuple[str, ...] = ()
    account_id: str = ""
    amount: int = 0
    reason: str = ""
    # A grant's ledger operation id, fixed before the first attempt: a batch retried after
    # a commit whose answer was lost (it did commit) finds it posted and does not grant twice.
    txn: str = ""

    @property
    def job_id(self) -> str:
        return self.job_ids[0] if self.job_ids else ""


def _conflict(which: str, name: str) -> TalosError:
    return TalosError("idempotency_conflict", f"{which} belongs to another account", field=name)


def _expired() -> TalosError:
    return TalosError("hold_expired", "the hold expired before the capture; nothing was charged")


@dataclass
class Books:
    """The accounts and holds one batch touches, as of ``now_ms``, and what it will write."""

    accounts: dict[str, Account]
    holds: dict[str, Hold]
    now_ms: int
    price: int
    hold_ttl_ms: int
    # Grant operations of this batch already in the ledger (an earlier attempt committed).
    posted: set[str] = field(default_factory=set)
    # Whether to leave debug notes (one per reserve and capture: not free on a hot path).
    debug: bool = False
    entries: list[dict[str, Any]] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    # The UTC day of now_ms: the day allowance is taken from.
    day: int = field(init=False)

    def __post_init__(self) -> None:
        self.day = day_of(self.now_ms)

    def post(self, posting: Posting) -> None:
        self.entries.extend(posting.entries(self.now_ms))

    def note(self, level: int, message: str, **extra: Any) -> None:
        """Logged after the commit: an attempt rolled back and retried leaves no line of its own."""
        self.notes.append((level, message, extra))

    def apply(self, op: Operation) -> Any:
        """Applies one operation; returns its answer, or the TalosError it ends with."""
        kind = op.kind
        if kind is OpKind.RESERVE:
            return self.reserve(op.job_id, op.account_id)
        if kind is OpKind.CAPTURE:
            return self.capture(op.job_id)
        if kind is OpKind.RELEASE:
            return self.release(op.job_id, op.reason)
        if kind is OpKind.EXPIRE:
            return self.expire(op.job_id)
        if kind is OpKind.RESERVE_MANY:
            return self.reserve_many(op.job_ids, op.account_id)
        account = self.accounts.get(op.account_id)
        if account is None:
            return TalosError("not_found", "no such account")
        if kind is OpKind.GRANT:
            self.grant(account, op.amount, op.txn)
        elif kind is OpKind.SET_ALLOWANCE:
            account.daily_allowance = op.amount
            account.dirty = True
        elif kind is OpKind.CONFIRM_AGE:
            if account.age_confirmed_at is None:
                account.age_confirmed_at = self.now_ms
                account.dirty = True
        else:  # pragma: no cover - a programming error
            raise ValueError(kind)
        return account.view(self.day)

    # -- holds ----------------------------------------------------------------------------
    def reserve(self, job_id: str, account_id: str) -> HoldAnswer | TalosError:
        """Holds one price for the job (allowance first); the same job id gives the same hold."""
        hold = self.holds.get(job_id)
        if hold is not None:
            return self._answer(hold) if hold.account_id == account_id else _conflict("this job id", "job_id")
        account = self._take((job_id,), account_id)
        if isinstance(account, TalosError):
            return account
        return self.holds[job_id].view(), account

    def reserve_many(
        self, job_ids: tuple[str, ...], account_id: str
    ) -> tuple[list[HoldView], AccountView] | TalosError:
        """Holds one price per job, all or nothing; jobs already held for the account keep their holds."""
        fresh = []
        for job_id in job_ids:
            hold = self.holds.get(job_id)
            if hold is None:
                fresh.append(job_id)
            elif hold.account_id != account_id:
                return _conflict(f"job id {job_id}", "job_ids")
        account = self._take(fresh, account_id)
        if isinstance(account, TalosError):
            return account
        return [self.holds[job_id].view() for job_id in job_ids], account

    def _take(self, job_ids: Sequence[str], account_id: str) -> AccountView | TalosError:
        """Holds one price for each job (none held yet), all or nothing; the account after."""
        account = self.accounts.get(account_id)
        if account is None:
            return TalosError("not_found", "no such account")
        day = self.day
        splits = split_prices(self.price, len(job_ids), account.allowance_left(day))
        if account.balance < sum(split.from_balance for split in splits):
            spendable = account.balance + sum(split.from_allowance for split in splits)
            if len(job_ids) == 1:
                asked = f"an image costs {self.price} credits"
            else:
                asked = f"{len(job_ids)} images cost {len(job_ids) * self.price} credits"
            return TalosError("insufficient_credits", f"{asked}; {spendable} available")
        for job_id, split in zip(job_ids, splits, strict=True):
            self._hold(job_id, account, split, day)
        return account.view(day)

    def _hold(self, job_id: str, account: Account, split: Split, day: int) -> None:
        if account.allowance_day != day:
            account.allowance_day = day
            account.allowance_used = 0
        account.allowance_used += split.from_allowance
        account.balance -= split.from_balance
        account.dirty = True
        self.holds[job_id] = Hold(
            job_id,
            account.id,
            split.amount,
            split.from_allowance,
            split.from_balance,
            day,
            HoldState.HELD,
            self.now_ms,
            self.now_ms + self.hold_ttl_ms,
            is_new=True,
        )
        self.post(reserve_posting(job_id, account.id, split))
        if self.debug:
            self.note(
                logging.DEBUG,
                "reserved",
                job_id=job_id,
                account_id=account.id,
                from_allowance=split.from_allowance,
                from_balance=split.from_balance,
            )

    def capture(self, job_id: str) -> HoldAnswer | TalosError:
        """Charges the hold; a capture after the hold's time expires it instead (no charge)."""
        hold = self.holds.get(job_id)
        if hold is None:
            return TalosError("not_found", "no hold for this job")
        state = hold.state
        if state is HoldState.EXPIRED:
            return _expired()
        if state is HoldState.RELEASED:
            return TalosError("invalid_request", "the hold was released; nothing was charged")
        if state is HoldState.HELD and hold.expires_at <= self.now_ms:
            self._resolve(hold, OpKind.EXPIRE, "expired")
            return _expired()
        self._resolve(hold, OpKind.CAPTURE, None)
        return self._answer(hold)

    def release(self, job_id: str, reason: str) -> HoldAnswer | TalosError:
        """Returns the hold's credits; a hold resolved before is answered as it is."""
        hold = self.holds.get(job_id)
        if hold is None:
            return TalosError("not_found", "no hold for this job")
        self._resolve(hold, OpKind.RELEASE, reason)
        return self._answer(hold)

    def expire(self, job_id: str) -> HoldAnswer | None:
        """Returns the hold's credits as EXPIRED if it is still held past its time."""
        hold = self.holds.get(job_id)
        if hold is None:
            return None
        if hold.expires_at <= self.now_ms:
            self._resolve(hold, OpKind.EXPIRE, "expired")
        return self._answer(hold)

    def _answer(self, hold: Hold) -> HoldAnswer:
        return hold.view(), self.accounts[hold.account_id].view(self.day)

    def _resolve(self, hold: Hold, op: OpKind, reason: str | None) -> None:
        """Moves the hold as :data:`~talos_billing.rules.TRANSITIONS` says, with its postings."""
        state = next_state(hold.state, op)
        if state is None:
            return
        account = self.accounts[hold.account_id]
        if state is not HoldState.CAPTURED:
            account.balance += hold.from_balance
            # Allowance goes back to the day it came from; a day that has passed is gone.
            if hold.from_allowance and account.allowance_day == hold.allowance_day:
                account.allowance_used = max(0, account.allowance_used - hold.from_allowance)
            account.dirty = True
            hold.reason = reason
        hold.state = state
        hold.resolved_at = self.now_ms
        hold.dirty = True
        self.post(resolve_posting(hold.job_id, account.id, hold.split, state))
        if state is HoldState.CAPTURED:
            if self.debug:
                self.note(logging.DEBUG, "captured", job_id=hold.job_id, amount=hold.amount)
            return
        self.note(
            logging.INFO,
            "hold returned",
            job_id=hold.job_id,
            account_id=account.id,
            state=state.name.lower(),
            reason=reason,
            from_allowance=hold.from_allowance,
            from_balance=hold.from_balance,
        )

    # -- accounts -------------------------------------------------------------------------
    def grant(self, account: Account, credits: int, txn: str) -> None:
        # Jobs are idempotent by job id; a grant by its operation id (see Operation.txn).
        if txn in self.posted:
            return
        account.balance += credits
        account.dirty = True
        self.post(grant_posting(txn, account.id, credits))
