"""The two-context rule, the preset text, negative-prompt semantics and failing closed.

Trigger words are made up (tests/moderation/test_rules.json): "zorbling" is a minor term,
"blarfed" a sexual term, "grownish" an adulthood term and "frobwear" a clothing term.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talos_moderation.policy import MINOR_SEXUAL, NONE, POLICY_UNAVAILABLE, PROMPT_TOO_LONG, PromptPolicy
from talos_moderation.policy.rules import LISTS, alternatives, load_documents

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


def realise(entry: str, suffixes: list[str]) -> str:
    """A rule entry as a prompt would write it: ``stem+`` takes the language's first suffix."""
    words = []
    for piece in entry.split():
        if piece.endswith("+") and len(piece) > 1:
            piece = piece[:-1] + suffixes[0]
        elif piece.endswith("*") and len(piece) > 1:
            piece = piece[:-1]
        words.append(piece)
    return " ".join(words)


class PackagedTerms:
    """Every entry of the shipped rule files, with its language, as a prompt would write it."""

    def __init__(self) -> None:
        self.by_list: dict[str, list[tuple[str, str]]] = {}  # list -> (text, language)
        self.strong_sexual: dict[str, str] = {}
        self.strong_minors: dict[str, str] = {}
        self.emoji: dict[str, list[str]] = {"minor_emoji": [], "sexual_emoji": []}
        for _, doc in load_documents(None):
            lang = doc.get("language", "")
            suffixes = doc.get("suffixes", []) or [""]
            for list_name in LISTS:
                for key in (f"{list_name}_terms", f"{list_name}_weak_terms"):
                    for entry in doc.get(key, []):
                        self.by_list.setdefault(list_name, []).extend(
                            (realise(phrase, suffixes), lang) for phrase in alternatives(entry)
                        )
            if doc.get("sexual_terms"):
                self.strong_sexual.setdefault(lang, realise(doc["sexual_terms"][0], suffixes))
            if doc.get("minor_terms"):
                self.strong_minors.setdefault(lang, realise(doc["minor_terms"][0], suffixes))
            for key, items in self.emoji.items():
                items += doc.get(key, [])
        self.strong_minor = next(t for t, lang in self.by_list["minor"] if lang == "en")

    def sexual_for(self, lang: str) -> str:
        """A sexual term of the same language: it also shows the language for weak terms."""
        return self.strong_sexual.get(lang) or self.strong_sexual["en"]

    def minor_for(self, lang: str) -> str:
        """A minor term of the same language: it also shows the language for weak terms."""
        return self.strong_minors.get(lang) or self.strong_minor


class TestPackagedRules:
    """The shipped rule files work for their real purpose. Prompts are composed at run time from
    the files' own lists, so this test's source spells out nothing."""

    @pytest.fixture(scope="class")
    def data(self) -> PackagedTerms:
        return PackagedTerms()

    @pytest.fixture(scope="class")
    def real(self) -> PromptPolicy:
        policy = PromptPolicy.load(None)
        assert policy.available, policy.error
        return policy

    def test_has_a_version_and_many_languages(self, real: PromptPolicy) -> None:
        assert real.version and real.version != "unavailable"
        assert real.rules is not None and len(real.rules.languages) >= 30

    def test_every_minor_term_pairs_with_a_sexual_term(self, real: PromptPolicy, data: PackagedTerms) -> None:
        terms = data.by_list["minor"]
        missed = [(m, lang) for m, lang in terms if not real.check(f"{m}, {data.sexual_for(lang)}").blocked]
        alone = [(m, lang) for m, lang in terms if real.check(f"{m} 🌳").blocked]
        assert missed == [] and alone == []

    def test_every_sexual_term_pairs_with_a_minor_term(self, real: PromptPolicy, data: PackagedTerms) -> None:
        terms = data.by_list["sexual"]
        missed = [(s, lang) for s, lang in terms if not real.check(f"{data.minor_for(lang)}, {s}").blocked]
        alone = [(s, lang) for s, lang in terms if real.check(f"{s} 🌳").blocked]
        assert missed == [] and alone == []

    def test_standalone_terms_and_emoji(self, real: PromptPolicy, data: PackagedTerms) -> None:
        assert [t for t, _ in data.by_list["standalone"] if not real.check(t).blocked] == []
        sexual = data.sexual_for("en")
        assert all(real.check(f"{e} {sexual}").blocked for e in data.emoji["minor_emoji"])

    def test_negative_steering_lists(self, real: PromptPolicy, data: PackagedTerms) -> None:
        minor, sexual = data.strong_minor, data.sexual_for("en")
        adult = [
            a
            for a, _ in data.by_list["negative_adulthood"]
            if not real.check(sexual, negative_prompt=a).blocked
        ]
        clothes = [
            c
            for c, _ in data.by_list["negative_clothing"]
            if not real.check(minor, negative_prompt=c).blocked
        ]
        assert adult == [] and clothes == []
        assert not real.check(sexual, negative_prompt=minor).blocked
        assert not real.check(minor, negative_prompt=sexual).blocked
