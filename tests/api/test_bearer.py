"""The one ``Bearer <key>`` reading shared by the HTTP header and the gRPC metadata."""

from __future__ import annotations

import pytest

from talos.billing.v1 import billing_pb2
from talos_common.errors import TalosError
from talos_gateway.auth import Authenticator


class FakeBilling:
    def __init__(self) -> None:
        self.keys: list[str] = []

    async def authenticate(self, api_key: str) -> billing_pb2.AccountState:
        self.keys.append(api_key)
        return billing_pb2.AccountState(account_id="acct-1")


async def test_bearer_key_is_read_case_insensitively_and_trimmed() -> None:
    billing = FakeBilling()
    auth = Authenticator(billing, cache_seconds=0.0, per_minute=100)
    for header in ("Bearer tk_one", "bearer tk_one", "  BEARER   tk_one  "):
        principal = await auth.authenticate_bearer(header, "the Authorization header")
        assert principal.account_id == "acct-1"
    assert billing.keys == ["tk_one"] * 3


@pytest.mark.parametrize("carrier", ["the Authorization header", "the authorization metadata"])
async def test_a_malformed_or_missing_bearer_is_invalid_api_key(carrier: str) -> None:
    billing = FakeBilling()
    auth = Authenticator(billing, cache_seconds=0.0, per_minute=100)
    for header in ("Basic abc", "Bearer", "Bearer two words", "tk_bare"):
        with pytest.raises(TalosError) as refused:
            await auth.authenticate_bearer(header, carrier)
        assert refused.value.code == "invalid_api_key"
        assert refused.value.message == f"{carrier} must be 'Bearer <key>'"
    for empty in (None, ""):
        with pytest.raises(TalosError) as missing:
            await auth.authenticate_bearer(empty, carrier)
        assert missing.value.code == "invalid_api_key" and "missing API key" in missing.value.message
    assert billing.keys == []  # a malformed header never reaches billing
