"""The ledger suite: the same tests on SQLite and on PostgreSQL.

Races run against two stores on one database (two billing replicas), so the database's
locking, not one process's queue, is what keeps an account from being overdrawn.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from talos_billing import rules
from talos_billing.rules import HoldState
from talos_billing.store import Store
from talos_common.errors import TalosError

from .conftest import FakeClock, OpenStore

PRICE = 18


async def assert_books_balance(store: Store) -> None:
    report = await store.audit()
    assert report.ok, report.problems
    assert report.ledger_sum == 0


async def two_replicas(open_store: OpenStore) -> list[Store]:
    """Two billing replicas on one database, each with two batches in flight; on PostgreSQL
    one tries batches without locks first (the default), the other locks from the start,
    so both paths meet in the races."""
    return [await open_store(batch_workers=2), await open_store(batch_workers=2, optimistic_batches=False)]


async def reserve_outcome(store: Store, job_id: str, account_id: str) -> str:
    try:
        await store.reserve(job_id, account_id)
    except TalosError as error:
        return error.code
    return "ok"


async def test_reserve_capture_release_move_credits(store: Store) -> None:
    account_id, _ = await store.create_account(credits=100)
    hold, account = await store.reserve("job-a", account_id)
    assert (hold.amount, hold.from_allowance, hold.from_balance) == (PRICE, 0, PRICE)
    assert hold.state == HoldState.HELD
    assert account.balance == 100 - PRICE
    hold, account = await store.capture("job-a")
    assert hold.state == HoldState.CAPTURED
    assert account.balance == 100 - PRICE

    await store.reserve("job-b", account_id)
    hold, account = await store.release("job-b", "node_failed")
    assert (hold.state, hold.reason) == (HoldState.RELEASED, "node_failed")
    assert account.balance == 100 - PRICE
    assert (await store.get_account(account_id)).balance == 100 - PRICE

    entries = await store.ledger_entries(job_id="job-a")
    assert sum(e["amount"] for e in entries) == 0
    assert {(e["kind"], e["account"], e["amount"]) for e in entries} == {
        ("reserve", account_id, -PRICE),
        ("reserve", rules.SYS_HOLDS, PRICE),
        ("capture", rules.SYS_HOLDS, -PRICE),
        ("capture", rules.SYS_REVENUE, PRICE),
    }
    await assert_books_balance(store)


async def test_each_hold_resolves_once(store: Store) -> None:
    account_id, _ = await store.create_account(credits=100)
    await store.reserve("job-1", account_id)
    await store.capture("job-1")
    hold, account = await store.capture("job-1")  # a retried capture: same answer, no second charge
    assert hold.state == HoldState.CAPTURED and account.balance == 100 - PRICE
    hold, account = await store.release("job-1", "late")  # resolved already: answered as it is
    assert hold.state == HoldState.CAPTURED and account.balance == 100 - PRICE

    await store.reserve("job-2", account_id)
    await store.release("job-2", "cancelled")
    hold, _ = await store.release("job-2", "cancelled")
    assert hold.state == HoldState.RELEASED
    with pytest.raises(TalosError) as caught:
        await store.capture("job-2")
    assert caught.value.code == "invalid_request"
    assert (await store.get_account(account_id)).balance == 100 - PRICE
    captures = [e for e in await store.ledger_entries(job_id="job-1") if e["kind"] == "capture"]
    assert len(captures) == 2  # one capture operation: two legs
    await assert_books_balance(store)


async def test_unknown_jobs_and_accounts(store: Store) -> None:
    for call in (store.capture("nope"), store.release("nope", "x"), store.reserve("job", "acc_missing")):
        with pytest.raises(TalosError) as caught:
            await call
        assert caught.value.code == "not_found"
    for bad in ("", " padded", "x" * 129, "tab\there"):
        with pytest.raises(TalosError) as caught:
            await store.capture(bad)
        assert caught.value.code == "invalid_request"


async def test_job_id_of_another_account_is_a_conflict(store: Store) -> None:
    first, _ = await store.create_account(credits=100)
    second, _ = await store.create_account(credits=100)
    await store.reserve("shared-job", first)
    with pytest.raises(TalosError) as caught:
        await store.reserve("shared-job", second)
    assert caught.value.code == "idempotency_conflict"
    assert (await store.get_account(second)).balance == 100


async def test_mixed_submitters_property(open_store: OpenStore) -> None:
    """8 submitters × 25 jobs on one account of 3,000: half captured, half released."""
    replicas = await two_replicas(open_store)
    account_id, _ = await replicas[0].create_account(credits=3000)
    rng = random.Random(5)
    plan = {f"prop-{s}-{j}": rng.random() < 0.5 for s in range(8) for j in range(25)}
    captured: list[str] = []

    async def submitter(index: int) -> None:
        store = replicas[index % 2]
        for j in range(25):
            job_id = f"prop-{index}-{j}"
            await store.reserve(job_id, account_id)
            if rng.random() < 0.3:
                await asyncio.sleep(0)
            if plan[job_id]:
                await replicas[(index + j) % 2].capture(job_id)
                captured.append(job_id)
            else:
                await replicas[(index + j) % 2].release(job_id, "node_failed")

    await asyncio.gather(*(submitter(i) for i in range(8)))
    successes = sum(plan.values())
    assert 0 < successes < 200 and len(captured) == successes
    account = await replicas[0].get_account(account_id)
    assert account.balance == 3000 - PRICE * successes
    for job_id, success in plan.items():
        hold = await replicas[1].hold(job_id)
        assert hold is not None
        assert hold.state == (HoldState.CAPTURED if success else HoldState.RELEASED)
    report = await replicas[0].audit()
    assert report.ok, report.problems
    for store in replicas:
        await assert_books_balance(store)
    held = [e for e in await replicas[0].ledger_entries(account=account_id)]
    assert sum(e["amount"] for e in held) == account.balance


async def test_parallel_reserves_never_overdraw(open_store: OpenStore) -> None:
    """50 parallel reserves on 35 credits: exactly one is accepted."""
    replicas = await two_replicas(open_store)
    account_id, _ = await replicas[0].create_account(credits=35)
    outcomes = await asyncio.gather(
        *(reserve_outcome(replicas[i % 2], f"race-{i}", account_id) for i in range(50))
    )
    assert outcomes.count("ok") == 1
    assert outcomes.count("insufficient_credits") == 49
    assert (await replicas[1].get_account(account_id)).balance == 35 - PRICE
    await assert_books_balance(replicas[0])


async def test_allowance_then_balance_race(open_store: OpenStore) -> None:
    """20 allowance credits + 18 on the balance: exactly two reserves, allowance spent first."""
    replicas = await two_replicas(open_store)
    account_id, _ = await replicas[0].create_account(credits=18, daily_allowance=20)
    outcomes = await asyncio.gather(
        *(reserve_outcome(replicas[i % 2], f"allow-{i}", account_id) for i in range(30))
    )
    assert outcomes.count("ok") == 2
    holds = [h for i in range(30) if (h := await replicas[0].hold(f"allow-{i}")) is not None]
    assert len(holds) == 2
    first, second = sorted(holds, key=lambda h: -h.from_allowance)
    assert (first.from_allowance, first.from_balance) == (18, 0)
    assert (second.from_allowance, second.from_balance) == (2, 16)
    account = await replicas[1].get_account(account_id)
    assert (account.balance, account.allowance_remaining) == (2, 0)
    await assert_books_balance(replicas[0])


async def test_same_job_reserved_concurrently_is_one_hold(open_store: OpenStore) -> None:
    replicas = await two_replicas(open_store)
    account_id, _ = await replicas[0].create_account(credits=100)
    answers = await asyncio.gather(*(replicas[i % 2].reserve("same-job", account_id) for i in range(10)))
    assert {hold for hold, _ in answers} == {answers[0][0]}
    assert (await replicas[0].get_account(account_id)).balance == 100 - PRICE
    reserves = {e["txn"] for e in await replicas[0].ledger_entries(job_id="same-job")}
    assert reserves == {"reserve:same-job"}
    await assert_books_balance(replicas[0])


async def test_capture_after_expiry_does_not_charge(store: Store, clock: FakeClock) -> None:
    account_id, _ = await store.create_account(credits=100, daily_allowance=10)
    hold, _ = await store.reserve("slow-job", account_id)
    assert (hold.from_allowance, hold.from_balance) == (10, 8)
    clock.advance(store.hold_ttl_ms / 1000 + 1)
    with pytest.raises(TalosError) as caught:
        await store.capture("slow-job")
    assert caught.value.code == "hold_expired"
    hold_now = await store.hold("slow-job")
    assert hold_now is not None and hold_now.state == HoldState.EXPIRED
    account = await store.get_account(account_id)
    assert (account.balance, account.allowance_remaining) == (100, 10)
    with pytest.raises(TalosError) as caught:  # and it stays uncharged
        await store.capture("slow-job")
    assert caught.value.code == "hold_expired"
    assert not [e for e in await store.ledger_entries(job_id="slow-job") if e["kind"] == "capture"]
    await assert_books_balance(store)


async def test_sweep_expires_unresolved_holds(store: Store, clock: FakeClock) -> None:
    account_id, _ = await store.create_account(credits=100)
    await store.reserve("forgotten", account_id)
    await store.reserve("fresh", account_id)
    assert (await store.get_account(account_id)).balance == 100 - 2 * PRICE
    clock.advance(store.hold_ttl_ms / 1000 - 1)
    await store.sweep()
    assert (await store.get_account(account_id)).balance == 100 - 2 * PRICE  # not yet
    await store.capture("fresh")
    clock.advance(2)
    await store.sweep()
    forgotten = await store.hold("forgotten")
    fresh = await store.hold("fresh")
    assert forgotten is not None and forgotten.state == HoldState.EXPIRED and forgotten.reason == "expired"
    assert fresh is not None and fresh.state == HoldState.CAPTURED
    assert (await store.get_account(account_id)).balance == 100 - PRICE
    hold, _ = await store.release("forgotten", "late")  # resolved once: expiry stands
    assert hold.state == HoldState.EXPIRED
    await assert_books_balance(store)


async def test_grant_allowance_and_age(store: Store) -> None:
    account_id, _ = await store.create_account()
    account = await store.get_account(account_id)
    assert (account.balance, account.daily_allowance, account.age_confirmed) == (0, 0, False)
    assert (await store.grant(account_id, 40)).balance == 40
    account = await store.set_allowance(account_id, 25)
    assert (account.daily_allowance, account.allowance_remaining) == (25, 25)
    assert (await store.confirm_age(account_id)).age_confirmed
    assert (await store.confirm_age(account_id)).age_confirmed
    for call in (
        store.grant(account_id, 0),
        store.grant(account_id, -5),
        store.set_allowance(account_id, -1),
    ):
        with pytest.raises(TalosError) as caught:
            await call
        assert caught.value.code == "invalid_request"
    with pytest.raises(TalosError) as caught:
        await store.grant("acc_nobody", 5)
    assert caught.value.code == "not_found"
    granted = [e for e in await store.ledger_entries(account=account_id) if e["kind"] == "grant"]
    assert [e["amount"] for e in granted] == [40]
    await assert_books_balance(store)


async def test_insufficient_credits_changes_nothing(store: Store) -> None:
    account_id, _ = await store.create_account(credits=17, daily_allowance=0)
    with pytest.raises(TalosError) as caught:
        await store.reserve("too-poor", account_id)
    assert caught.value.code == "insufficient_credits"
    assert await store.hold("too-poor") is None
    assert (await store.get_account(account_id)).balance == 17
    await store.grant(account_id, 1)
    hold, account = await store.reserve("too-poor", account_id)  # the same job id works once funded
    assert hold.state == HoldState.HELD and account.balance == 0
    await assert_books_balance(store)


async def test_hot_account_under_two_replicas_keeps_every_credit(open_store: OpenStore) -> None:
    """Many reserves, grants and releases on one account from both replicas at once."""
    replicas = await two_replicas(open_store)
    account_id, _ = await replicas[0].create_account(credits=18 * 10)

    async def worker(index: int) -> int:
        store = replicas[index % 2]
        charged = 0
        for j in range(6):
            job_id = f"hot-{index}-{j}"
            try:
                await store.reserve(job_id, account_id)
            except TalosError as error:
                assert error.code == "insufficient_credits"
                await store.grant(account_id, 18)
                continue
            if j % 3 == 0:
                await replicas[(index + 1) % 2].release(job_id, "node_failed")
            else:
                await replicas[(index + 1) % 2].capture(job_id)
                charged += 1
        return charged

    charged = sum(await asyncio.gather(*(worker(i) for i in range(12))))
    granted = [e for e in await replicas[0].ledger_entries(account=account_id) if e["kind"] == "grant"]
    account = await replicas[1].get_account(account_id)
    assert account.balance == sum(e["amount"] for e in granted) - 18 * charged
    assert account.balance >= 0
    await assert_books_balance(replicas[0])


async def test_a_grant_retried_after_a_lost_commit_answer_is_applied_once(store: Store) -> None:
    """The first commit succeeds but its answer is lost (the connection drops): billing
    retries the batch, and the grant must not be applied a second time."""
    account_id, _ = await store.create_account(0)
    real_write = store.db.write
    lost: list[bool] = []

    async def write_losing_first_answer(fn: Any, *, snapshot: bool = False) -> Any:
        result = await real_write(fn, snapshot=snapshot)
        if not lost:
            lost.append(True)
            raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost after commit"))
        return result

    store.db.write = write_losing_first_answer  # type: ignore[method-assign]
    try:
        view = await store.grant(account_id, 40)
    finally:
        store.db.write = real_write  # type: ignore[method-assign]
    assert lost, "the fault was never injected"
    assert view.balance == 40
    assert (await store.get_account(account_id)).balance == 40
    grants = [e for e in await store.ledger_entries(account=account_id) if e["kind"] == "grant"]
    assert len(grants) == 1
    assert (await store.audit()).ok


async def test_a_batch_rolled_back_and_retried_logs_its_return_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Log lines are written after the commit: an attempt that rolled back leaves none, so
    an operator reading the log never sees a hold returned twice (or one that was not)."""
    account_id, _ = await store.create_account(credits=100)
    await store.reserve("logged-once", account_id)
    real_write = store.db.write
    failed: list[bool] = []

    async def write_failing_first_attempt(fn: Any, *, snapshot: bool = False) -> Any:
        def attempt(conn: Any) -> Any:
            result = fn(conn)
            if not failed:  # the batch did all its work, then the commit never happened
                failed.append(True)
                raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost before commit"))
            return result

        return await real_write(attempt, snapshot=snapshot)

    caplog.set_level(logging.INFO, logger="talos_billing.ledger")
    store.db.write = write_failing_first_attempt  # type: ignore[method-assign]
    try:
        hold, account = await store.release("logged-once", "node_failed")
    finally:
        store.db.write = real_write  # type: ignore[method-assign]
    assert failed, "the fault was never injected"
    assert (hold.state, account.balance) == (HoldState.RELEASED, 100)
    returned = [
        r
        for r in caplog.records
        if r.getMessage() == "hold returned" and getattr(r, "job_id", None) == "logged-once"
    ]
    assert len(returned) == 1
    releases = {e["txn"] for e in await store.ledger_entries(job_id="logged-once") if e["kind"] == "release"}
    assert releases == {"release:logged-once"}
    await assert_books_balance(store)
