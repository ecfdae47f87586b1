"""ReserveMany: several holds in one transaction, all or nothing, over the real gRPC server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from talos.billing.v1 import billing_pb2
from talos_billing.limits import MAX_RESERVE_MANY
from talos_billing.rules import SYS_REVENUE
from talos_billing.store import Store
from talos_common.errors import TalosError

from .conftest import TIMEOUT, Client, OpenStore, call_error
from .test_ledger import assert_books_balance, two_replicas

PRICE = 18


def reserve_many(account_id: str, *job_ids: str) -> billing_pb2.ReserveManyRequest:
    return billing_pb2.ReserveManyRequest(account_id=account_id, job_ids=list(job_ids))


async def test_partial_coverage_is_refused_and_holds_nothing(client: Client) -> None:
    stub, store = client.stub, client.billing.store
    created = await stub.CreateAccount(
        billing_pb2.CreateAccountRequest(credits=50, daily_allowance=10), timeout=TIMEOUT
    )
    jobs = ("p-1", "p-2", "p-3", "p-4")  # 72 credits asked, 60 spendable: three would fit
    error = await call_error(stub.ReserveMany(reserve_many(created.account_id, *jobs), timeout=TIMEOUT))
    assert error.code == "insufficient_credits"
    assert "4 images cost 72 credits; 60 available" in error.message
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReserveMany(reserve_many(created.account_id, *jobs), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for job_id in jobs:
        assert await store.hold(job_id) is None
    state = await stub.GetAccount(
        billing_pb2.GetAccountRequest(account_id=created.account_id), timeout=TIMEOUT
    )
    assert (state.balance, state.allowance_remaining) == (50, 10)
    assert [e["kind"] for e in await store.ledger_entries(account=created.account_id)] == ["grant"]
    await assert_books_balance(store)


async def test_repeat_returns_the_same_holds_and_three_captures_of_four_net_three_prices(
    client: Client,
) -> None:
    stub, store = client.stub, client.billing.store
    created = await stub.CreateAccount(
        billing_pb2.CreateAccountRequest(credits=80, daily_allowance=10), timeout=TIMEOUT
    )
    account_id = created.account_id
    jobs = ("n-1", "n-2", "n-3", "n-4")
    first = await stub.ReserveMany(reserve_many(account_id, *jobs), timeout=TIMEOUT)
    assert [h.job_id for h in first.holds] == list(jobs)
    assert [(h.from_allowance, h.from_balance) for h in first.holds] == [(10, 8), (0, 18), (0, 18), (0, 18)]
    assert all(h.state == billing_pb2.HOLD_STATE_HELD and h.account_id == account_id for h in first.holds)
    assert (first.account.balance, first.account.allowance_remaining) == (80 - 62, 0)

    again = await stub.ReserveMany(reserve_many(account_id, *jobs), timeout=TIMEOUT)
    assert list(again.holds) == list(first.holds)
    assert again.account.balance == first.account.balance
    reserves = [e for e in await store.ledger_entries(account=account_id) if e["kind"] == "reserve"]
    assert len(reserves) == 4  # one reserve per job, none from the repeat

    for job_id in jobs[1:]:
        captured = await stub.Capture(billing_pb2.CaptureRequest(job_id=job_id), timeout=TIMEOUT)
        assert captured.hold.state == billing_pb2.HOLD_STATE_CAPTURED
    released = await stub.Release(
        billing_pb2.ReleaseRequest(job_id=jobs[0], reason="cancelled"), timeout=TIMEOUT
    )
    assert released.hold.state == billing_pb2.HOLD_STATE_RELEASED
    state = await stub.GetAccount(billing_pb2.GetAccountRequest(account_id=account_id), timeout=TIMEOUT)
    spent = (80 + 10) - (state.balance + state.allowance_remaining)
    assert spent == 3 * PRICE
    revenue = sum(e["amount"] for e in await store.ledger_entries() if e["account"] == SYS_REVENUE)
    assert revenue == 3 * PRICE
    report = await store.audit()
    assert report.ok and report.revenue == 3 * PRICE and report.held == 0, report.problems


async def test_jobs_held_already_keep_their_holds_and_another_accounts_job_is_a_conflict(
    client: Client,
) -> None:
    stub, store = client.stub, client.billing.store
    mine = await stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=100), timeout=TIMEOUT)
    theirs = await stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=100), timeout=TIMEOUT)
    single = await stub.Reserve(
        billing_pb2.ReserveRequest(job_id="k-1", account_id=mine.account_id), timeout=TIMEOUT
    )
    both = await stub.ReserveMany(reserve_many(mine.account_id, "k-1", "k-2"), timeout=TIMEOUT)
    assert both.holds[0] == single.hold
    assert both.account.balance == 100 - 2 * PRICE

    error = await call_error(stub.ReserveMany(reserve_many(theirs.account_id, "k-3", "k-2"), timeout=TIMEOUT))
    assert error.code == "idempotency_conflict"
    assert await store.hold("k-3") is None
    assert (await store.get_account(theirs.account_id)).balance == 100
    await assert_books_balance(store)


async def test_bad_lists_are_invalid_requests(client: Client) -> None:
    stub = client.stub
    account = await stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=10_000), timeout=TIMEOUT)
    too_many = [f"t-{n}" for n in range(MAX_RESERVE_MANY + 1)]
    for job_ids in ([], too_many, ["d-1", "d-1"], ["e-1", ""], ["e-2", " padded"], ["x" * 129]):
        error = await call_error(
            stub.ReserveMany(reserve_many(account.account_id, *job_ids), timeout=TIMEOUT)
        )
        assert error.code == "invalid_request", job_ids
    error = await call_error(stub.ReserveMany(reserve_many("acc_missing", "m-1"), timeout=TIMEOUT))
    assert error.code == "not_found"
    most = await stub.ReserveMany(reserve_many(account.account_id, *too_many[:-1]), timeout=TIMEOUT)
    assert len(most.holds) == MAX_RESERVE_MANY
    for refused in ("d-1", "e-1", "e-2", too_many[-1]):
        assert await client.billing.store.hold(refused) is None


async def test_concurrent_reserve_many_on_two_replicas_never_overdraw(open_store: OpenStore) -> None:
    """Eight callers ask for 4 images each of an account that can pay for 5: one call wins,
    whole; the leftover single reserve takes the fifth; nothing else is held."""
    replicas = await two_replicas(open_store)
    account_id, _ = await replicas[0].create_account(credits=5 * PRICE)

    async def attempt(index: int) -> str:
        jobs = [f"c-{index}-{n}" for n in range(4)]
        try:
            await replicas[index % 2].reserve_many(account_id, jobs)
        except TalosError as error:
            return error.code
        return "ok"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert outcomes.count("ok") == 1 and outcomes.count("insufficient_credits") == 7
    winner = outcomes.index("ok")
    for index in range(8):
        held = [await replicas[1].hold(f"c-{index}-{n}") for n in range(4)]
        assert all(h is not None for h in held) if index == winner else held == [None] * 4
    await replicas[0].reserve("c-last", account_id)
    assert (await replicas[1].get_account(account_id)).balance == 0
    await assert_books_balance(replicas[0])


async def test_store_answers_holds_in_the_order_asked(store: Store) -> None:
    account_id, _ = await store.create_account(credits=100)
    holds, account = await store.reserve_many(account_id, ["z", "a", "m"])
    assert [h.job_id for h in holds] == ["z", "a", "m"]
    assert account.balance == 100 - 3 * PRICE


def test_the_contract_states_billings_limit() -> None:
    proto = Path(billing_pb2.__file__).with_name("billing.proto").read_text()
    request = proto[proto.index("message ReserveManyRequest") :]
    assert f"The job ids: 1 to {MAX_RESERVE_MANY}, each once." in request[: request.index("}")]
