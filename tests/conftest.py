"""Fixtures shared by every test area: the whole mesh as real processes on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from talos_dev.mesh import Account, LocalMesh

REPO = Path(__file__).resolve().parent.parent
# Made-up trigger words, so no test ever spells out an abusive prompt.
TEST_RULES = REPO / "tests" / "moderation" / "test_rules.json"
IN_CI = os.environ.get("CI", "").lower() == "true"


def mesh_moderation_env() -> dict[str, str]:
    return {"TALOS_MODERATION_RULES_PATH": str(TEST_RULES)} if TEST_RULES.exists() else {}


@pytest.fixture(scope="session")
def process_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """Billing, moderation, the gateway and one render node (built-in test model) as processes."""
    local = LocalMesh(tmp_path_factory.mktemp("mesh"), moderation_env=mesh_moderation_env())
    try:
        local.start(nodes=1)
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def mesh(process_mesh: LocalMesh) -> LocalMesh:
    """The mesh a test area talks to; the API contract tests swap in the in-process one."""
    return process_mesh


@pytest.fixture
def account(mesh: LocalMesh) -> Account:
    """A fresh account with 1,000 credits, so tests never share a balance."""
    return mesh.create_account(1000)
