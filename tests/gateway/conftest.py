"""Fixtures of the in-process pipeline tests (see stack.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from talos_moderation.classifier import NsfwClassifier
from tests.conftest import TEST_RULES

from .stack import Stack, start_stack

MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture(scope="session")
def classifier() -> NsfwClassifier:
    """One loaded classifier for every stack: loading it is the slow part of moderation."""
    return NsfwClassifier(threads=1, device="cpu")


@pytest.fixture
async def make_stack(tmp_path: Path, classifier: NsfwClassifier) -> AsyncIterator[MakeStack]:
    stacks: list[Stack] = []

    async def make(**options: Any) -> Stack:
        stack = await start_stack(tmp_path / f"stack{len(stacks)}", TEST_RULES, classifier, **options)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            await stack.stop()
