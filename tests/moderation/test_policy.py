"""The two-context rule, the preset text, negative-prompt semantics and failing closed.

Trigger words are made up (tests/moderation/test_rules.json): "zorbling" is a minor term,
"blarfed" a sexual term, "grownish" an adulthood term and "frobwear" a clothing term.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talos_moderation.policy import MINOR_SEXUAL, NONE, POLICY_UNAVAILABLE, PROMPT_TOO_LONG, PromptPolicy
from talos_moderation.policy.rules import packaged_rules_text

from .conftest import TEST_RULES


def test_verdict_reports_the_policy_version(test_policy: PromptPolicy) -> None:
    assert test_policy.check("a cat").policy_version == "test-2026.11.1"
    assert test_policy.check("zorbling blarfed").policy_version == "test-2026.11.1"


def test_both_contexts_are_needed(test_policy: PromptPolicy) -> None:
    assert test_policy.check("zorbling blarfed").blocked
    assert not test_policy.check("a zorbling in a garden").blocked
    assert not test_policy.check("a blarfed statue").blocked
    assert test_policy.check("a cat").category == NONE


def test_verdict_never_names_the_term(test_policy: PromptPolicy) -> None:
    verdict = test_policy.check("zorbling blarfed")
    assert set(vars(verdict)) == {"blocked", "category", "policy_version"}
    assert "zorbling" not in repr(verdict) and "blarfed" not in repr(verdict)


class TestPresetText:
    """The prompt after the style preset is applied is checked too, together with the user's."""

    def test_preset_text_alone_can_block(self, test_policy: PromptPolicy) -> None:
        verdict = test_policy.check("a portrait", final_prompt="a portrait, zorbling, blarfed style")
        assert verdict.blocked and verdict.category == MINOR_SEXUAL

    def test_contexts_combine_across_prompt_and_preset(self, test_policy: PromptPolicy) -> None:
        assert test_policy.check("a zorbling", final_prompt="a zorbling, in blarfed style").blocked
        assert test_policy.check("a blarfed scene", final_prompt="storybook style with a zorbling").blocked

    def test_harmless_preset_changes_nothing(self, test_policy: PromptPolicy) -> None:
        assert not test_policy.check("a zorbling", final_prompt="a zorbling, watercolor, soft light").blocked

    def test_preset_negative_is_read_as_a_negative(self, test_policy: PromptPolicy) -> None:
        assert test_policy.check("a zorbling", final_negative_prompt="lowres, frobwear").blocked
        assert not test_policy.check("a zorbling", final_negative_prompt="lowres, blarfed").blocked


class TestNegativePrompt:
    """A negative prompt steers away from what it names."""

    def test_steering_away_from_minors_or_nudity_does_not_count(self, test_policy: PromptPolicy) -> None:
        assert not test_policy.check("a blarfed statue", negative_prompt="zorbling, wee snark").blocked
        assert not test_policy.check("a zorbling at school", negative_prompt="blarfed, unfrobbed").blocked
        assert not test_policy.check("a portrait", negative_prompt="zorbling, blarfed").blocked
        assert not test_policy.check("a blarfed statue", negative_prompt="15 yo, 🐣").blocked
        assert not test_policy.check("a portrait", negative_prompt="snorkelwump").blocked

    def test_steering_away_from_adulthood_counts_as_minor(self, test_policy: PromptPolicy) -> None:
        verdict = test_policy.check("a blarfed figure", negative_prompt="grownish")
        assert verdict.blocked and verdict.category == MINOR_SEXUAL
        assert test_policy.check("a blarfed figure", negative_prompt="lowres, (eldersome:1.4)").blocked
        assert test_policy.check("a blarfed figure", negative_prompt="g r o w n i s h").blocked

    def test_steering_away_from_clothing_counts_as_nudity(self, test_policy: PromptPolicy) -> None:
        verdict = test_policy.check("a zorbling", negative_prompt="frobwear, blurry")
        assert verdict.blocked and verdict.category == MINOR_SEXUAL
        assert test_policy.check("a zorbling", negative_prompt="FR0BWEAR").blocked
        assert test_policy.check("🐣 in a park", negative_prompt="frobbed").blocked

    def test_steering_both_ways_in_the_negative_alone_blocks(self, test_policy: PromptPolicy) -> None:
        assert test_policy.check("a figure in a field", negative_prompt="grownish, frobwear").blocked

    def test_one_steer_alone_is_allowed(self, test_policy: PromptPolicy) -> None:
        assert not test_policy.check("a figure in a field", negative_prompt="grownish").blocked
        assert not test_policy.check("a figure in a field", negative_prompt="frobwear").blocked

    def test_negative_exceptions(self, test_policy: PromptPolicy) -> None:
        assert not test_policy.check("a blarfed figure", negative_prompt="grownish photo").blocked
        assert not test_policy.check("a zorbling", negative_prompt="ugly frobwear").blocked


class TestFailClosed:
    def _policy(self, tmp_path: Path, content: str | None) -> PromptPolicy:
        path = tmp_path / "rules.json"
        if content is not None:
            path.write_text(content, encoding="utf-8")
        return PromptPolicy.load(path)

    @pytest.mark.parametrize(
        "content",
        [
            None,  # missing
            "{not json",  # unparseable
            "[]",  # not an object
            json.dumps({"minor_terms": ["zorbling"], "sexual_terms": ["blarfed"]}),  # no version
            json.dumps({"version": "x", "minor_terms": [], "sexual_terms": ["blarfed"]}),  # empty list
            json.dumps({"version": "x", "minor_terms": "zorbling", "sexual_terms": ["blarfed"]}),
            json.dumps({"version": "x", "minor_terms": ["a"], "sexual_terms": ["b"], "max_minor_age": "17"}),
        ],
    )
    def test_every_prompt_is_blocked_when_rules_cannot_load(
        self, tmp_path: Path, content: str | None
    ) -> None:
        policy = self._policy(tmp_path, content)
        assert not policy.available
        for prompt in ("a cat on a sofa", "", "a mountain lake"):
            verdict = policy.check(prompt)
            assert verdict.blocked
            assert verdict.category == POLICY_UNAVAILABLE
            assert verdict.policy_version == "unavailable"

    def test_unreadable_bytes_fail_closed(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.json"
        path.write_bytes(b"\xff\xfe\x00garbage")
        assert PromptPolicy.load(path).check("a cat").category == POLICY_UNAVAILABLE

    def test_too_long_is_blocked_unread(self) -> None:
        policy = PromptPolicy.load(TEST_RULES, max_chars=100)
        verdict = policy.check("a cat " * 40)
        assert verdict.blocked and verdict.category == PROMPT_TOO_LONG


class TestPackagedRules:
    """The shipped rule file works for its real purpose. Prompts are composed at run time from
    the file's own lists, so this test's source spells out nothing."""

    @pytest.fixture(scope="class")
    def data(self) -> dict[str, list[str]]:
        loaded: dict[str, list[str]] = json.loads(packaged_rules_text())
        return loaded

    @pytest.fixture(scope="class")
    def real(self) -> PromptPolicy:
        policy = PromptPolicy.load(None)
        assert policy.available, policy.error
        return policy

    def test_has_a_version(self, real: PromptPolicy) -> None:
        assert real.version and real.version != "unavailable"

    def test_every_minor_term_pairs_with_a_sexual_term(self, real: PromptPolicy, data: dict) -> None:
        sexual = data["sexual_terms"][0]
        missed = [m for m in data["minor_terms"] if not real.check(f"a {m}, {sexual}").blocked]
        alone = [m for m in data["minor_terms"] if real.check(f"a {m} in a garden").blocked]
        assert missed == [] and alone == []

    def test_every_sexual_term_pairs_with_a_minor_term(self, real: PromptPolicy, data: dict) -> None:
        minor = data["minor_terms"][0]
        missed = [s for s in data["sexual_terms"] if not real.check(f"a {minor}, {s}").blocked]
        alone = [s for s in data["sexual_terms"] if real.check(f"an adult, {s}").blocked]
        assert missed == [] and alone == []

    def test_standalone_terms_and_emoji(self, real: PromptPolicy, data: dict) -> None:
        assert all(real.check(t).blocked for t in data["standalone_terms"])
        sexual = data["sexual_terms"][0]
        assert all(real.check(f"{e} {sexual}").blocked for e in data["minor_emoji"])

    def test_negative_steering_lists(self, real: PromptPolicy, data: dict) -> None:
        minor, sexual = data["minor_terms"][0], data["sexual_terms"][0]
        assert all(real.check(sexual, negative_prompt=a).blocked for a in data["negative_adulthood_terms"])
        assert all(real.check(minor, negative_prompt=c).blocked for c in data["negative_clothing_terms"])
        assert not real.check(sexual, negative_prompt=minor).blocked
        assert not real.check(minor, negative_prompt=sexual).blocked
