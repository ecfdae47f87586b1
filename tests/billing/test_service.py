"""BillingService over a real socket (server in-process on port 0), on both stores."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import select

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_billing import schema
from talos_billing.config import Settings
from talos_billing.rules import HoldState
from talos_billing.service import start

from .conftest import DAY, NOON, TIMEOUT, Client, FakeClock, call_error


async def test_job_lifecycle_over_grpc(client: Client, clock: FakeClock) -> None:
    stub = client.stub
    created = await stub.CreateAccount(
        billing_pb2.CreateAccountRequest(credits=50, daily_allowance=10), timeout=TIMEOUT
    )
    assert created.account_id.startswith("acc_") and created.api_key.startswith("tls_")
    state = await stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=created.api_key), timeout=TIMEOUT)
    assert (state.account_id, state.balance, state.daily_allowance) == (created.account_id, 50, 10)
    assert state.price_per_image == 18
    assert state.allowance_resets_at.seconds == int(NOON + DAY / 2)  # the next 00:00 UTC

    reserved = await stub.Reserve(
        billing_pb2.ReserveRequest(job_id="g-1", account_id=created.account_id), timeout=TIMEOUT
    )
    hold = reserved.hold
    assert (hold.job_id, hold.amount, hold.from_allowance, hold.from_balance) == ("g-1", 18, 10, 8)
    assert hold.state == billing_pb2.HOLD_STATE_HELD
    assert hold.expires_at.seconds == int(clock.now + 600)
    assert (reserved.account.balance, reserved.account.allowance_remaining) == (42, 0)

    captured = await stub.Capture(billing_pb2.CaptureRequest(job_id="g-1"), timeout=TIMEOUT)
    assert captured.hold.state == billing_pb2.HOLD_STATE_CAPTURED
    assert captured.account.balance == 42

    await stub.Reserve(
        billing_pb2.ReserveRequest(job_id="g-2", account_id=created.account_id), timeout=TIMEOUT
    )
    released = await stub.Release(
        billing_pb2.ReleaseRequest(job_id="g-2", reason="cancelled"), timeout=TIMEOUT
    )
    assert released.hold.state == billing_pb2.HOLD_STATE_RELEASED
    assert released.account.balance == 42

    await stub.Reserve(
        billing_pb2.ReserveRequest(job_id="g-3", account_id=created.account_id), timeout=TIMEOUT
    )
    clock.advance(601)
    error = await call_error(stub.Capture(billing_pb2.CaptureRequest(job_id="g-3"), timeout=TIMEOUT))
    assert error.code == "hold_expired"
    state = await stub.GetAccount(
        billing_pb2.GetAccountRequest(account_id=created.account_id), timeout=TIMEOUT
    )
    assert state.balance == 42
    report = await client.billing.store.audit()
    assert report.ok, report.problems


async def test_errors_carry_their_codes(client: Client) -> None:
    stub = client.stub
    poor = await stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=5), timeout=TIMEOUT)
    cases = [
        (
            stub.Reserve(billing_pb2.ReserveRequest(job_id="e-1", account_id=poor.account_id)),
            "insufficient_credits",
        ),
        (stub.GetAccount(billing_pb2.GetAccountRequest(account_id="acc_missing")), "not_found"),
        (stub.Capture(billing_pb2.CaptureRequest(job_id="never-reserved")), "not_found"),
        (stub.Authenticate(billing_pb2.AuthenticateRequest(api_key="tls_wrong")), "invalid_api_key"),
        (stub.Authenticate(billing_pb2.AuthenticateRequest(api_key="")), "invalid_api_key"),
        (stub.AuthenticateNode(billing_pb2.AuthenticateNodeRequest(token="tlsn_wrong")), "invalid_api_key"),
        (stub.Reserve(billing_pb2.ReserveRequest(job_id="", account_id=poor.account_id)), "invalid_request"),
        (stub.Grant(billing_pb2.GrantRequest(account_id=poor.account_id, credits=0)), "invalid_request"),
        (stub.RevokeNodeToken(billing_pb2.RevokeNodeTokenRequest(node_id="node_missing")), "not_found"),
    ]
    for call, code in cases:
        assert (await call_error(call)).code == code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Authenticate(billing_pb2.AuthenticateRequest(api_key="tls_wrong"), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Reserve(
            billing_pb2.ReserveRequest(job_id="e-2", account_id=poor.account_id), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_operator_calls(client: Client) -> None:
    stub = client.stub
    created = await stub.CreateAccount(billing_pb2.CreateAccountRequest(), timeout=TIMEOUT)
    account_id = created.account_id
    assert (
        await stub.Grant(billing_pb2.GrantRequest(account_id=account_id, credits=30), timeout=TIMEOUT)
    ).balance == 30
    state = await stub.SetAllowance(
        billing_pb2.SetAllowanceRequest(account_id=account_id, daily_allowance=36), timeout=TIMEOUT
    )
    assert (state.daily_allowance, state.allowance_remaining) == (36, 36)
    assert not state.age_confirmed
    state = await stub.ConfirmAge(billing_pb2.ConfirmAgeRequest(account_id=account_id), timeout=TIMEOUT)
    assert state.age_confirmed

    second_key = (
        await stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(account_id=account_id), timeout=TIMEOUT)
    ).api_key
    assert second_key != created.api_key
    for key in (created.api_key, second_key):
        await stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=key), timeout=TIMEOUT)
    revoked = await stub.RevokeApiKeys(
        billing_pb2.RevokeApiKeysRequest(account_id=account_id), timeout=TIMEOUT
    )
    assert revoked.revoked == 2
    for key in (created.api_key, second_key):
        error = await call_error(
            stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=key), timeout=TIMEOUT)
        )
        assert error.code == "invalid_api_key"
    third_key = (
        await stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(account_id=account_id), timeout=TIMEOUT)
    ).api_key
    state = await stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=third_key), timeout=TIMEOUT)
    assert state.account_id == account_id and state.age_confirmed


async def test_node_tokens(client: Client) -> None:
    stub = client.stub
    issued = await stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(name="gpu-box-1"), timeout=TIMEOUT)
    assert issued.node_id.startswith("node_") and issued.token.startswith("tlsn_")
    node = await stub.AuthenticateNode(
        billing_pb2.AuthenticateNodeRequest(token=issued.token), timeout=TIMEOUT
    )
    assert (node.node_id, node.name) == (issued.node_id, "gpu-box-1")
    # An API key is not a node token, and the other way round.
    account = await stub.CreateAccount(billing_pb2.CreateAccountRequest(), timeout=TIMEOUT)
    error = await call_error(
        stub.AuthenticateNode(billing_pb2.AuthenticateNodeRequest(token=account.api_key))
    )
    assert error.code == "invalid_api_key"
    error = await call_error(stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=issued.token)))
    assert error.code == "invalid_api_key"

    first = await stub.RevokeNodeToken(
        billing_pb2.RevokeNodeTokenRequest(node_id=issued.node_id), timeout=TIMEOUT
    )
    again = await stub.RevokeNodeToken(
        billing_pb2.RevokeNodeTokenRequest(node_id=issued.node_id), timeout=TIMEOUT
    )
    assert (first.revoked, again.revoked) == (True, False)
    error = await call_error(stub.AuthenticateNode(billing_pb2.AuthenticateNodeRequest(token=issued.token)))
    assert error.code == "invalid_api_key"


async def test_secrets_are_stored_only_as_hashes(client: Client) -> None:
    stub = client.stub
    created = await stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=1), timeout=TIMEOUT)
    issued = await stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(name="n"), timeout=TIMEOUT)
    store = client.billing.store
    key_rows = await store.db.read(lambda conn: conn.execute(select(schema.api_keys)).all())
    token_rows = await store.db.read(lambda conn: conn.execute(select(schema.node_tokens)).all())
    stored = json.dumps([list(map(str, row)) for row in [*key_rows, *token_rows]])
    assert created.api_key not in stored and issued.token not in stored
    assert created.api_key[4:20] not in stored and issued.token[5:21] not in stored
    assert hashlib.sha256(created.api_key.encode()).hexdigest() in stored
    assert hashlib.sha256(issued.token.encode()).hexdigest() in stored


async def test_logs_never_carry_keys_or_tokens(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stub = client.stub
    created = await stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=100), timeout=TIMEOUT)
    await stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=created.api_key), timeout=TIMEOUT)
    await call_error(stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=created.api_key + "x")))
    key = (await stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(account_id=created.account_id))).api_key
    issued = await stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(name="n"), timeout=TIMEOUT)
    await stub.AuthenticateNode(billing_pb2.AuthenticateNodeRequest(token=issued.token), timeout=TIMEOUT)
    await stub.Reserve(billing_pb2.ReserveRequest(job_id="log-1", account_id=created.account_id))
    await stub.Release(billing_pb2.ReleaseRequest(job_id="log-1", reason="cancelled"))
    await stub.RevokeApiKeys(billing_pb2.RevokeApiKeysRequest(account_id=created.account_id))
    text = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    assert "log-1" in text  # job ids and amounts are logged ...
    for secret in (created.api_key, key, issued.token):  # ... keys and tokens never
        assert secret not in text
        assert secret[4:24] not in text


async def test_health_and_reflection(client: Client) -> None:
    health = health_pb2_grpc.HealthStub(client.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="talos.billing.v1.BillingService"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(client.channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for reply in reflection.ServerReflectionInfo(ask()):
        names |= {service.name for service in reply.list_services_response.service}
    assert "talos.billing.v1.BillingService" in names


async def test_expired_holds_are_released_by_billing_itself(settings: Settings) -> None:
    """The sweeper task, on the real clock: nobody resolves the hold, billing returns it."""
    quick = replace(settings, hold_ttl_seconds=0.3, sweep_seconds=0.05)
    billing = await start(quick)
    try:
        async with grpc.aio.insecure_channel(billing.address) as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            account = await stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=20), timeout=TIMEOUT)
            reserved = await stub.Reserve(
                billing_pb2.ReserveRequest(job_id="abandoned", account_id=account.account_id), timeout=TIMEOUT
            )
            assert reserved.account.balance == 2
            deadline = time.monotonic() + 15
            while True:
                state = await stub.GetAccount(billing_pb2.GetAccountRequest(account_id=account.account_id))
                if state.balance == 20 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert state.balance == 20
            hold = await billing.store.hold("abandoned")
            assert hold is not None and hold.state == HoldState.EXPIRED
            error = await call_error(
                stub.Capture(billing_pb2.CaptureRequest(job_id="abandoned"), timeout=TIMEOUT)
            )
            assert error.code == "hold_expired"
    finally:
        await billing.stop()
