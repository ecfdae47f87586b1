"""The staker daily allowance: spent first, resets at 00:00 UTC, never carries over."""

from __future__ import annotations

import pytest

from talos_billing.store import Store
from talos_common.errors import TalosError

from .conftest import DAY, NOON, FakeClock
from .test_ledger import assert_books_balance

MIDNIGHT = NOON + DAY / 2  # 2026-11-24 00:00:00 UTC


async def test_allowance_is_spent_before_the_balance(store: Store) -> None:
    account_id, _ = await store.create_account(credits=100, daily_allowance=40)
    splits = []
    for job in ("a-1", "a-2", "a-3"):
        hold, account = await store.reserve(job, account_id)
        splits.append((hold.from_allowance, hold.from_balance, account.allowance_remaining, account.balance))
    assert splits == [(18, 0, 22, 100), (18, 0, 4, 100), (4, 14, 0, 86)]
    await assert_books_balance(store)


async def test_released_allowance_returns_the_same_day(store: Store) -> None:
    account_id, _ = await store.create_account(credits=0, daily_allowance=18)
    await store.reserve("same-day", account_id)
    assert (await store.get_account(account_id)).allowance_remaining == 0
    with pytest.raises(TalosError) as caught:
        await store.reserve("second", account_id)
    assert caught.value.code == "insufficient_credits"
    _, account = await store.release("same-day", "node_failed")
    assert (account.allowance_remaining, account.balance) == (18, 0)
    hold, _ = await store.reserve("second", account_id)  # the returned allowance is usable again
    assert hold.from_allowance == 18
    await assert_books_balance(store)


async def test_allowance_resets_at_midnight_utc(store: Store, clock: FakeClock) -> None:
    clock.now = MIDNIGHT - 10
    account_id, _ = await store.create_account(credits=100, daily_allowance=20)
    hold, account = await store.reserve("late-night", account_id)
    assert (hold.from_allowance, account.allowance_remaining) == (18, 2)
    assert account.allowance_resets_at == MIDNIGHT
    await store.capture("late-night")

    clock.now = MIDNIGHT + 10
    account = await store.get_account(account_id)
    assert account.allowance_remaining == 20  # a new day: full again
    assert account.allowance_resets_at == MIDNIGHT + DAY
    hold, account = await store.reserve("early-morning", account_id)
    assert (hold.from_allowance, hold.from_balance, account.allowance_remaining) == (18, 0, 2)
    await assert_books_balance(store)


async def test_unspent_allowance_does_not_carry_over(store: Store, clock: FakeClock) -> None:
    account_id, _ = await store.create_account(credits=0, daily_allowance=20)
    clock.now = MIDNIGHT + 3 * DAY + 60  # three days unused
    account = await store.get_account(account_id)
    assert account.allowance_remaining == 20
    await store.reserve("d3-1", account_id)
    with pytest.raises(TalosError) as caught:
        await store.reserve("d3-2", account_id)
    assert caught.value.code == "insufficient_credits"


async def test_allowance_released_after_midnight_goes_back_to_its_own_day(
    store: Store, clock: FakeClock
) -> None:
    clock.now = MIDNIGHT - 60
    account_id, _ = await store.create_account(credits=16, daily_allowance=20)
    hold, _ = await store.reserve("straddles", account_id)
    assert (hold.from_allowance, hold.from_balance) == (18, 0)
    clock.now = MIDNIGHT + 60
    first_today, _ = await store.reserve("today-1", account_id)
    assert first_today.from_allowance == 18
    _, account = await store.release("straddles", "node_failed")
    # Yesterday's 18 went back to yesterday, which is over: today's allowance is unchanged.
    assert (account.allowance_remaining, account.balance) == (2, 16)
    second_today, account = await store.reserve("today-2", account_id)
    assert (second_today.from_allowance, second_today.from_balance) == (2, 16)
    assert (account.allowance_remaining, account.balance) == (0, 0)
    await assert_books_balance(store)


async def test_expired_hold_returns_allowance_to_its_day(store: Store, clock: FakeClock) -> None:
    account_id, _ = await store.create_account(credits=0, daily_allowance=18)
    await store.reserve("expiring", account_id)
    clock.advance(store.hold_ttl_ms / 1000 + 1)  # still the same day (noon + 10 minutes)
    await store.sweep()
    account = await store.get_account(account_id)
    assert account.allowance_remaining == 18
    await assert_books_balance(store)


async def test_lowering_the_allowance_mid_day(store: Store) -> None:
    account_id, _ = await store.create_account(credits=0, daily_allowance=36)
    await store.reserve("lower-1", account_id)
    account = await store.set_allowance(account_id, 10)
    assert account.allowance_remaining == 0  # 18 already used today, more than the new 10
    with pytest.raises(TalosError) as caught:
        await store.reserve("lower-2", account_id)
    assert caught.value.code == "insufficient_credits"
    account = await store.set_allowance(account_id, 36)
    assert account.allowance_remaining == 18
    await assert_books_balance(store)
