"""Fixtures of the API tests.

``mesh`` is the in-process one here (tests/gateway/inprocess.py: billing, moderation and the
gateway as real servers in this process, a test peer as the render node), so a failure points
at the gateway's own modules; the tests about processes, logs and the real render node ask for
``process_mesh`` (tests/conftest.py) instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from talos_dev.mesh import Account, LocalMesh
from tests.conftest import TEST_RULES
from tests.gateway.inprocess import InProcessMesh

from .support import Api


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    local = InProcessMesh(tmp_path_factory.mktemp("inprocess"), TEST_RULES)
    try:
        local.start(nodes=1)
        yield local
    finally:
        local.stop()


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
