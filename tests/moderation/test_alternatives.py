"""Phrases written with alternatives, exact words spaced into syllables, and ages written alike
in a few languages, with made-up words as in test_languages.py ("zorbling" is a minor term and
"blarfed" a sexual term of the base file). No abusive prompt is spelled out here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from talos_moderation.policy import PromptPolicy
from talos_moderation.policy.rules import MAX_ALTERNATIVES, alternatives

from .test_languages import AGE_LANG, policy_of, write_rules

PHRASE_LANG: dict[str, Any] = {
    "language": "xx",
    "sexual_terms": ["mok|mek flarn|florn"],
    "sexual_exceptions": ["mok|mek flarn|florn stod"],
}


def blocked(policy: PromptPolicy, text: str) -> bool:
    return policy.check(text).blocked


class TestPhraseAlternatives:
    def test_every_combination_is_a_phrase_of_its_own(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, PHRASE_LANG)
        for phrase in ("mok flarn", "mok florn", "mek flarn", "mek florn"):
            assert blocked(policy, f"zorbling {phrase}")
        assert not blocked(policy, "zorbling mek") and not blocked(policy, "zorbling florn")
        assert not blocked(policy, "zorbling florn mek")  # a phrase keeps its word order

    def test_exception_phrases_take_alternatives_too(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, PHRASE_LANG)
        assert not blocked(policy, "zorbling mek florn stod")

    def test_spelled_out(self) -> None:
        assert alternatives("a|b c") == ["a c", "b c"] and alternatives("a b") == ["a b"]

    @pytest.mark.parametrize("entry", ["mok|| flarn", "|mok flarn", " ".join(["a|b|c|d"] * 5)])
    def test_an_empty_or_oversized_entry_fails_closed(self, tmp_path: Path, entry: str) -> None:
        assert 4**5 > MAX_ALTERNATIVES
        write_rules(tmp_path, {"language": "xx", "sexual_terms": [entry]})
        assert not PromptPolicy.load(tmp_path).available


class TestExactWordsSpacedIntoSyllables:
    def test_a_long_exact_word_read_from_neighbouring_words(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, {"language": "xx", "minor_terms": ["snorzeltik=", "snib="]})
        assert blocked(policy, "snorzel tik blarfed") and blocked(policy, "snorzeltik blarfed")
        assert not blocked(policy, "snorzel tik in the garden")
        assert not blocked(policy, "sn ib blarfed")  # short exact words are not read joined


class TestAgeWrittenAlikeInAFewLanguages:
    @staticmethod
    def language(name: str, **extra: Any) -> dict[str, Any]:
        return {**AGE_LANG, "language": name, **extra}

    def test_each_of_a_few_languages_is_shown(self, tmp_path: Path) -> None:
        weak = self.language("zz", sexual_weak_terms=["glorf"], evidence_words=["plok"])
        policy = policy_of(tmp_path, weak, self.language("zy"), self.language("zw"))
        assert blocked(policy, "tiv jahrz glorf")  # zz, zy and zw all read the age

    def test_an_age_read_alike_by_many_shows_none(self, tmp_path: Path) -> None:
        weak = self.language("zz", sexual_weak_terms=["glorf"], evidence_words=["plok"])
        others = [self.language(name) for name in ("zy", "zw", "zv")]
        policy = policy_of(tmp_path, weak, *others)
        assert not blocked(policy, "tiv jahrz glorf")
        assert blocked(policy, "tiv jahrz glorf plok")


class TestSameReadingInEveryProcess:
    def test_fillings_of_a_masked_word_do_not_follow_string_hashing(self) -> None:
        # The packaged rules know many words a short masked word may be; only the first few are
        # read, so their order must not change with the interpreter's hash seed.
        code = (
            "from talos_moderation.policy import PromptPolicy;"
            "r = PromptPolicy.load(None).rules;"
            "print([r.masks.fillings(w) for w in ('s#x', 'b*by', 'gi*l', 'n#k')])"
        )
        outputs = {
            subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for seed in ("1", "2", "3")
        }
        assert len(outputs) == 1 and "[]" not in outputs.pop()
