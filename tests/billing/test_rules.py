"""The ledger rules with no database: the split, the transition table, postings, the books.

These run on plain Python objects (:mod:`talos_billing.rules`, :mod:`talos_billing.books`);
the same rules run inside every batch against SQLite and PostgreSQL in the other tests.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talos_billing.books import Account, Books, Hold, Operation
from talos_billing.rules import (
    DAY_MS,
    SYS_ALLOWANCE,
    SYS_GRANTS,
    SYS_HOLDS,
    SYS_REVENUE,
    TRANSITIONS,
    EntryKind,
    HoldState,
    OpKind,
    Posting,
    Split,
    allowance_left,
    grant_posting,
    next_state,
    reserve_posting,
    resolve_posting,
    split_prices,
)
from talos_common.errors import TalosError

PRICE = 18
TTL_MS = 600_000
DAY = 20_415  # a UTC day number
NOON_MS = DAY * DAY_MS + DAY_MS // 2


def books(*accounts: Account, now_ms: int = NOON_MS, holds: dict[str, Hold] | None = None) -> Books:
    return Books({a.id: a for a in accounts}, holds or {}, now_ms, PRICE, TTL_MS)


def account(
    balance: int = 0, allowance: int = 0, used: int = 0, day: int = DAY, name: str = "acc"
) -> Account:
    return Account(name, balance, allowance, day, used)


def totals(entries: list[dict[str, Any]]) -> dict[str, int]:
    by_account: dict[str, int] = collections.defaultdict(int)
    for entry in entries:
        by_account[entry["account"]] += entry["amount"]
    return dict(by_account)


def ok(answer: Any) -> Any:
    """An operation's answer, which must not be an error."""
    assert not isinstance(answer, TalosError), answer
    return answer


# -- the split -----------------------------------------------------------------------------
def test_split_takes_the_allowance_first_hold_by_hold() -> None:
    assert split_prices(18, 3, 40) == [Split(18, 0), Split(18, 0), Split(4, 14)]
    assert split_prices(18, 2, 0) == [Split(0, 18), Split(0, 18)]
    assert split_prices(18, 0, 40) == []


def test_allowance_used_counts_only_on_its_own_day() -> None:
    assert allowance_left(20, DAY, 18, DAY) == 2
    assert allowance_left(20, DAY - 1, 18, DAY) == 20  # yesterday's use is gone
    assert allowance_left(10, DAY, 18, DAY) == 0  # lowered below what was used: none, never negative


@given(
    price=st.integers(1, 10**6),
    count=st.integers(0, 16),
    allowance=st.integers(0, 10**8),
)
def test_splits_add_up_and_never_overdraw_the_allowance(price: int, count: int, allowance: int) -> None:
    splits = split_prices(price, count, allowance)
    assert all(split.amount == price and split.from_balance >= 0 for split in splits)
    assert sum(split.from_allowance for split in splits) == min(price * count, allowance)


# -- the transition table ------------------------------------------------------------------
def test_only_a_held_hold_moves_and_each_resolution_has_its_state() -> None:
    assert dict(TRANSITIONS) == {
        (HoldState.HELD, OpKind.CAPTURE): HoldState.CAPTURED,
        (HoldState.HELD, OpKind.RELEASE): HoldState.RELEASED,
        (HoldState.HELD, OpKind.EXPIRE): HoldState.EXPIRED,
    }
    for state in (HoldState.CAPTURED, HoldState.RELEASED, HoldState.EXPIRED):
        for op in OpKind:
            assert next_state(state, op) is None


def test_hold_states_are_numbered_as_the_contract() -> None:
    from talos.billing.v1 import billing_pb2

    for state in HoldState:
        assert billing_pb2.HoldState.Value(f"HOLD_STATE_{state.name}") == state.value


# -- postings ------------------------------------------------------------------------------
def test_each_operation_posts_legs_that_sum_to_zero() -> None:
    split = Split(10, 8)
    reserve = reserve_posting("j", "acc", split)
    assert (reserve.txn, reserve.kind) == ("reserve:j", EntryKind.RESERVE)
    assert set(reserve.legs) == {("acc", -8), (SYS_ALLOWANCE, -10), (SYS_HOLDS, 18)}
    capture = resolve_posting("j", "acc", split, HoldState.CAPTURED)
    assert (capture.txn, set(capture.legs)) == ("capture:j", {(SYS_HOLDS, -18), (SYS_REVENUE, 18)})
    for state, kind in ((HoldState.RELEASED, "release"), (HoldState.EXPIRED, "expire")):
        back = resolve_posting("j", "acc", split, state)
        assert (back.txn, set(back.legs)) == (
            f"{kind}:j",
            {(SYS_HOLDS, -18), ("acc", 8), (SYS_ALLOWANCE, 10)},
        )
    grant = grant_posting("grant:1", "acc", 40)
    assert set(grant.legs) == {(SYS_GRANTS, -40), ("acc", 40)}
    with pytest.raises(ValueError, match="sum to zero"):
        Posting("bad", EntryKind.GRANT, None, (("acc", 5),)).entries(0)


def test_legs_of_zero_write_no_entry() -> None:
    entries = reserve_posting("j", "acc", Split(18, 0)).entries(123)
    assert {(e["account"], e["amount"]) for e in entries} == {(SYS_ALLOWANCE, -18), (SYS_HOLDS, 18)}
    assert all(e["at"] == 123 and e["kind"] == "reserve" for e in entries)


# -- the books -----------------------------------------------------------------------------
def test_reserve_then_capture() -> None:
    acc = account(balance=100, allowance=10)
    b = books(acc)
    hold, view = ok(b.reserve("j", "acc"))
    assert (hold.state, hold.from_allowance, hold.from_balance) == (HoldState.HELD, 10, 8)
    assert (view.balance, view.allowance_remaining) == (92, 0)
    assert hold.expires_at == (NOON_MS + TTL_MS) / 1000
    hold, view = ok(b.capture("j"))
    assert hold.state == HoldState.CAPTURED and view.balance == 92
    again, _ = ok(b.capture("j"))
    assert again == hold  # answered, not charged twice
    assert totals(b.entries) == {"acc": -8, SYS_ALLOWANCE: -10, SYS_HOLDS: 0, SYS_REVENUE: 18}


def test_reserve_is_idempotent_and_a_job_belongs_to_one_account() -> None:
    first, second = account(balance=100, name="a"), account(balance=100, name="b")
    b = books(first, second)
    hold, _ = ok(b.reserve("j", "a"))
    same, view = ok(b.reserve("j", "a"))
    assert same == hold and view.balance == 82
    conflict = b.reserve("j", "b")
    assert isinstance(conflict, TalosError) and conflict.code == "idempotency_conflict"
    assert second.balance == 100 and len(b.entries) == 2  # one reserve: two legs


def test_release_returns_the_allowance_to_its_own_day() -> None:
    acc = account(balance=0, allowance=18)
    b = books(acc)
    b.reserve("j", "acc")
    assert acc.allowance_used == 18
    tomorrow = books(acc, now_ms=NOON_MS + DAY_MS, holds=b.holds)
    tomorrow.reserve("k", "acc")  # today's allowance
    hold, view = ok(tomorrow.release("j", "node_failed"))
    assert (hold.state, hold.reason) == (HoldState.RELEASED, "node_failed")
    assert (view.allowance_remaining, acc.allowance_day, acc.allowance_used) == (0, DAY + 1, 18)


def test_capture_past_the_hold_time_expires_it_without_a_charge() -> None:
    acc = account(balance=50)
    b = books(acc)
    b.reserve("j", "acc")
    late = books(acc, now_ms=NOON_MS + TTL_MS, holds=b.holds)
    error = late.capture("j")
    assert isinstance(error, TalosError) and error.code == "hold_expired"
    assert b.holds["j"].state == HoldState.EXPIRED and acc.balance == 50
    assert not [e for e in late.entries if e["kind"] == "capture"]
    assert ok(late.release("j", "late"))[0].state == HoldState.EXPIRED


def test_expire_leaves_a_hold_within_its_time_alone() -> None:
    acc = account(balance=50)
    b = books(acc)
    b.reserve("j", "acc")
    answer = b.expire("j")
    assert answer is not None and answer[0].state == HoldState.HELD and acc.balance == 32
    assert b.expire("missing") is None


def test_reserve_many_is_all_or_nothing() -> None:
    acc = account(balance=50, allowance=10)
    b = books(acc)
    refused = b.reserve_many(("a", "b", "c", "d"), "acc")
    assert isinstance(refused, TalosError) and refused.code == "insufficient_credits"
    assert "4 images cost 72 credits; 60 available" in refused.message
    assert (acc.balance, acc.allowance_used, b.holds, b.entries) == (50, 0, {}, [])
    acc.balance = 62
    answer = ok(b.reserve_many(("a", "b", "c", "d"), "acc"))
    holds, view = answer
    assert [(h.job_id, h.from_allowance, h.from_balance) for h in holds] == [
        ("a", 10, 8),
        ("b", 0, 18),
        ("c", 0, 18),
        ("d", 0, 18),
    ]
    assert (view.balance, view.allowance_remaining) == (0, 0)
    assert b.reserve_many(("a", "b", "c", "d"), "acc") == answer  # the same call: the same holds


def test_reserve_many_keeps_existing_holds_and_refuses_another_accounts_job() -> None:
    mine, theirs = account(balance=36, name="mine"), account(balance=100, name="theirs")
    b = books(mine, theirs)
    b.reserve("x", "theirs")
    conflict = b.reserve_many(("a", "x"), "mine")
    assert isinstance(conflict, TalosError) and conflict.code == "idempotency_conflict"
    assert "a" not in b.holds and mine.balance == 36
    b.reserve("a", "mine")
    _, view = ok(b.reserve_many(("a", "b"), "mine"))  # "a" is held already: only "b" is new
    assert view.balance == 0


def test_grant_is_applied_once_per_operation_id() -> None:
    acc = account()
    b = books(acc)
    b.apply(Operation(OpKind.GRANT, account_id="acc", amount=40, txn="grant:1"))
    retried = Books({"acc": acc}, {}, NOON_MS, PRICE, TTL_MS, posted={"grant:1"})
    view = retried.apply(Operation(OpKind.GRANT, account_id="acc", amount=40, txn="grant:1"))
    assert view.balance == 40 and retried.entries == []
    missing = b.apply(Operation(OpKind.CONFIRM_AGE, account_id="nobody"))
    assert isinstance(missing, TalosError) and missing.code == "not_found"


# -- any sequence of operations keeps the books balanced -----------------------------------
_operations = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "reserve_many", "capture", "release", "expire", "grant", "allowance"]),
        st.integers(0, 5),  # which job (or how many jobs)
        st.integers(0, 40),  # credits, or an allowance
        st.integers(0, 2),  # minutes, hours or a day passing before the operation
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=_operations, balance=st.integers(0, 100), allowance=st.integers(0, 40))
def test_any_sequence_keeps_every_invariant(
    ops: list[tuple[str, int, int, int]], balance: int, allowance: int
) -> None:
    acc = Account("acc", 0, allowance, DAY, 0)
    entries: list[dict[str, Any]] = []
    holds: dict[str, Hold] = {}
    now = NOON_MS
    grants = 0

    def step(op: Operation) -> Any:
        b = Books({"acc": acc}, holds, now, PRICE, TTL_MS)
        answer = b.apply(op)
        entries.extend(b.entries)
        return answer

    if balance:
        step(Operation(OpKind.GRANT, account_id="acc", amount=balance, txn="grant:opening"))
        grants += balance
    for index, (kind, job, amount, wait) in enumerate(ops):
        now += (60_000, 3_600_000, DAY_MS)[wait] if index % 3 == 0 else 0
        job_id = f"j{job}"
        if kind == "reserve":
            step(Operation(OpKind.RESERVE, (job_id,), "acc"))
        elif kind == "reserve_many":
            step(Operation(OpKind.RESERVE_MANY, tuple(f"m{index}-{n}" for n in range(job + 1)), "acc"))
        elif kind == "capture" and job_id in holds:
            step(Operation(OpKind.CAPTURE, (job_id,)))
        elif kind == "release" and job_id in holds:
            step(Operation(OpKind.RELEASE, (job_id,), reason="cancelled"))
        elif kind == "expire":
            step(Operation(OpKind.EXPIRE, (job_id,)))
        elif kind == "grant" and amount:
            step(Operation(OpKind.GRANT, account_id="acc", amount=amount, txn=f"grant:{index}"))
            grants += amount
        elif kind == "allowance":
            step(Operation(OpKind.SET_ALLOWANCE, account_id="acc", amount=amount))

    by_account = totals(entries)
    by_txn: dict[str, int] = collections.defaultdict(int)
    for entry in entries:
        by_txn[entry["txn"]] += entry["amount"]
    assert sum(by_account.values()) == 0 and not any(by_txn.values())
    assert acc.balance >= 0 and acc.allowance_used >= 0
    assert acc.balance == by_account.get("acc", 0)
    states = collections.Counter(hold.state for hold in holds.values())
    held = sum(h.amount for h in holds.values() if h.state == HoldState.HELD)
    captured = sum(h.amount for h in holds.values() if h.state == HoldState.CAPTURED)
    assert by_account.get(SYS_HOLDS, 0) == held
    assert by_account.get(SYS_REVENUE, 0) == captured
    taken = sum(h.from_allowance for h in holds.values() if h.state in (HoldState.HELD, HoldState.CAPTURED))
    assert -by_account.get(SYS_ALLOWANCE, 0) == taken
    today = sum(
        h.from_allowance
        for h in holds.values()
        if h.state in (HoldState.HELD, HoldState.CAPTURED) and h.allowance_day == acc.allowance_day
    )
    assert acc.allowance_used == today
    # Credits are neither made nor lost: granted = balance + held + charged.
    assert grants + (-by_account.get(SYS_ALLOWANCE, 0)) == acc.balance + held + captured
    assert states[HoldState.CAPTURED] == len({e["txn"] for e in entries if e["kind"] == "capture"})
