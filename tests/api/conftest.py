"""Fixtures of the API tests. The mesh itself (real billing, moderation, gateway, render node as
processes on free ports) is the session-wide ``mesh`` fixture from tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from talos_dev.mesh import Account, LocalMesh

from .support import Api


@pytest.fixture
async def api(mesh: LocalMesh) -> AsyncIterator[Api]:
    client = Api(mesh.http_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def key(account: Account) -> str:
    """The API key of a fresh account with 1,000 credits."""
    return account.api_key


@pytest.fixture
def new_account(mesh: LocalMesh) -> Callable[..., Account]:
    def make(credits: int = 1000, allowance: int = 0) -> Account:
        return mesh.create_account(credits, allowance)

    return make
