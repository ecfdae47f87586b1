"""The false-block rate of the real packaged rules on a benign set of our own (>= 500 prompts).

The set (benign_prompts.json) covers children, families, school, toys and animals, "girl" and
"boy" in innocent contexts, words that look like terms (baby blue, minor key, infantry, blue
tits, cum laude), and adult art nudity without minors, some with negative prompts that name
minors or nudity (steering away). Every one must pass: the measured rate is 0.
"""

from __future__ import annotations

import json

import pytest

from talos_moderation.policy import PromptPolicy

from .conftest import HERE


def test_false_block_rate_on_benign_prompts_is_zero(capsys: pytest.CaptureFixture[str]) -> None:
    prompts = json.loads((HERE / "benign_prompts.json").read_text("utf-8"))["prompts"]
    assert len(prompts) >= 500
    policy = PromptPolicy.load(None)
    assert policy.available, policy.error
    blocked = [p for p in prompts if policy.check(p["prompt"], p["negative_prompt"]).blocked]
    rate = len(blocked) / len(prompts)
    with capsys.disabled():
        print(
            f"\nbenign false-block rate (rules {policy.version}): {len(blocked)}/{len(prompts)} = {rate:.2%}"
        )
    assert blocked == []
