"""The multilingual mechanism, with made-up words in made-up languages (no abusive prompt here).

A rule folder is written per test: a manifest naming one file per language, as the packaged
rules do. "zorbling" is a minor term and "blarfed" a sexual term (as in test_rules.json); each
test adds the piece of grammar it exercises: weak terms and language evidence, prefixes and
suffixes, stems, prefix terms, scripts written without spaces, hidden letters, look-alike
letters, and age grammar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from talos_moderation.policy import MINOR_SEXUAL, POLICY_UNAVAILABLE, PromptPolicy
from talos_moderation.policy.skeleton import readings

BASE: dict[str, Any] = {"language": "", "minor_terms": ["zorbling", "zorblings"], "sexual_terms": ["blarfed"]}


WEAK_LANG: dict[str, Any] = {
    "language": "xx",
    "minor_weak_terms": ["snib"],
    "sexual_terms": ["glorfen"],
    "evidence_words": ["plok"],
}

AFFIX_LANG: dict[str, Any] = {
    "language": "xx",
    "prefixes": ["va", "ul"],
    "suffixes": ["ek", "otta"],
    "minor_terms": ["snorp", "glimm+", "dak fen"],
    "sexual_terms": ["frandle*"],
    "substring_exceptions": ["frandlewick*"],
}

UNSPACED_LANG: dict[str, Any] = {
    "language": "yy",
    "minor_terms": ["甲乙"],
    "sexual_terms": ["丙丁"],
    "minor_exceptions": ["戊甲乙"],
    "negative_clothing_terms": ["庚辛"],
}

AGE_LANG: dict[str, Any] = {
    "language": "zz",
    "ages": {
        "numbers": {"vok": 3, "tiv": 15, "gar": 20},
        "ordinals": {"tivth": 15},
        "big": ["gar"],
        "connectors": ["e"],
        "anchors": ["=jahrz", "=under", "klaz", "=añoz"],
        "patterns": [
            {"re": "{n} jahrz\\b", "not_after": ["sinz"]},
            {"re": "\\bunder {n}(?P<unit> jahrz\\b)?", "max": 18, "min_without_unit": 12},
            {"re": "{o} klaz\\b", "max": 12},
            {"re": "{n} añoz\\b"},
        ],
    },
}


def write_rules(folder: Path, *languages: dict[str, Any], manifest: dict[str, Any] | None = None) -> Path:
    files = ["base.json"]
    (folder / "base.json").write_text(json.dumps(BASE), "utf-8")
    for i, data in enumerate(languages):
        name = f"lang{i}.json"
        (folder / name).write_text(json.dumps(data, ensure_ascii=False), "utf-8")
        files.append(name)
    content = {"version": "test-multi", "substring_min_length": 6, "files": files, **(manifest or {})}
    (folder / "manifest.json").write_text(json.dumps(content), "utf-8")
    return folder


def policy_of(tmp_path: Path, *languages: dict[str, Any]) -> PromptPolicy:
    policy = PromptPolicy.load(write_rules(tmp_path, *languages))
    assert policy.available, policy.error
    return policy


class TestRuleFolder:
    def test_folder_manifest_and_single_file_forms_load(self, tmp_path: Path) -> None:
        write_rules(tmp_path, {"language": "xx", "minor_terms": ["snorp"]})
        for path in (tmp_path, tmp_path / "manifest.json"):
            policy = PromptPolicy.load(path)
            assert policy.version == "test-multi"
            assert policy.check("snorp blarfed").blocked and policy.check("zorbling blarfed").blocked
        single = tmp_path / "single.json"
        single.write_text(json.dumps({"version": "one", **BASE}), "utf-8")
        assert PromptPolicy.load(single).check("zorbling blarfed").blocked

    @pytest.mark.parametrize(
        "breakage",
        [
            "manifest_missing",
            "listed_file_missing",
            "listed_file_broken",
            "files_not_a_list",
            "weak_terms_without_language",
            "stem_without_suffixes",
            "age_pattern_broken",
            "age_pattern_without_anchors",
            "affixes_without_language",
        ],
    )
    def test_any_broken_part_fails_closed(self, tmp_path: Path, breakage: str) -> None:
        lang: dict[str, Any] = {"language": "xx", "minor_terms": ["snorp"]}
        manifest: dict[str, Any] = {}
        if breakage == "weak_terms_without_language":
            lang = {"minor_weak_terms": ["snorp"]}
        elif breakage == "stem_without_suffixes":
            lang["minor_terms"] = ["snorp+"]
        elif breakage == "age_pattern_broken":
            lang["ages"] = {"anchors": ["yoz"], "patterns": [{"re": "{n} (yoz"}]}
        elif breakage == "age_pattern_without_anchors":
            lang["ages"] = {"patterns": [{"re": "{n} yoz"}]}
        elif breakage == "affixes_without_language":
            lang = {"suffixes": ["ek"]}
        elif breakage == "files_not_a_list":
            manifest = {"files": "lang0.json"}
        write_rules(tmp_path, lang, manifest=manifest)
        if breakage == "manifest_missing":
            (tmp_path / "manifest.json").unlink()
        elif breakage == "listed_file_missing":
            (tmp_path / "lang0.json").unlink()
        elif breakage == "listed_file_broken":
            (tmp_path / "lang0.json").write_text("{not json", "utf-8")
        policy = PromptPolicy.load(tmp_path)
        assert not policy.available
        verdict = policy.check("a cat on a sofa")
        assert verdict.blocked and verdict.category == POLICY_UNAVAILABLE


class TestWeakTermsNeedTheirLanguage:
    def test_weak_term_counts_only_where_the_language_shows(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, WEAK_LANG)
        assert not policy.check("snib blarfed").blocked  # an ordinary word of another language
        assert policy.check("snib blarfed plok").blocked  # an evidence word
        assert policy.check("snib glorfen").blocked  # a strong term of the language is evidence
        assert not policy.check("snib plok in a garden").blocked  # still needs both contexts


class TestAffixes:
    @pytest.mark.parametrize(
        "text",
        ["snorp frandle", "vasnorp frandle", "snorpek frandle", "ulsnorpotta frandle", "glimmek frandle",
         "dakek fen frandle", "zorbling frandlezoo", "zorbling frandle"],
    )  # fmt: skip
    def test_prefixes_suffixes_stems_and_prefix_terms(self, tmp_path: Path, text: str) -> None:
        verdict = policy_of(tmp_path, AFFIX_LANG).check(text)
        assert verdict.blocked and verdict.category == MINOR_SEXUAL, text

    @pytest.mark.parametrize(
        "text",
        [
            "glimm frandle",
            "snorpzz frandle",
            "xxsnorp frandle",
            "zorbling frandlewicked",
            "vasnorp in a garden",
        ],
    )
    def test_what_the_affixes_do_not_cover(self, tmp_path: Path, text: str) -> None:
        assert not policy_of(tmp_path, AFFIX_LANG).check(text).blocked, text


class TestUnspacedScripts:
    def test_terms_are_found_inside_a_run_of_text(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, UNSPACED_LANG)
        assert policy.check("某甲乙某丙丁某").blocked
        assert policy.check("甲乙的照片", negative_prompt="低质量庚辛").blocked
        assert not policy.check("某甲乙某某").blocked
        assert not policy.check("戊甲乙某丙丁").blocked  # inside an exception


class TestHiddenAndLookAlikeLetters:
    @pytest.mark.parametrize(
        "text",
        ["z*rbling blarfed", "zorbl_ng blarfed", "z#rbl!ng bl@rfed", "zorbling bl*rf*d", "zorbling bl?rfed",
         "z*o*r*b*l*i*n*g blarfed", "zоrbling blarfed", "zorbling blаrfеd"],
    )  # fmt: skip
    def test_masks_and_mixed_scripts(self, test_policy: PromptPolicy, text: str) -> None:
        assert test_policy.check(text).blocked, text

    def test_one_context_with_masks_still_passes(self, test_policy: PromptPolicy) -> None:
        assert not test_policy.check("z*rbling in a garden").blocked
        assert not test_policy.check("a statue, bl*rfed").blocked

    def test_latin_letters_inside_a_cyrillic_word(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, {"language": "ru", "minor_terms": ["дрюк"]})
        assert policy.check("дрюk blarfed").blocked  # Latin k
        assert policy.check("дрюк blarfed").blocked

    def test_real_cyrillic_words_are_not_read_as_latin(self, tmp_path: Path) -> None:
        # 'сор' is Russian written in letters that all look Latin; it must not become 'cop'.
        policy = policy_of(tmp_path, {"language": "en", "minor_terms": ["cop"], "sexual_terms": ["ѕex"]})
        assert readings("сор") == ()
        assert not policy.check("сор blarfed").blocked
        assert policy.check("cop blarfed").blocked
        assert readings("ѕех") == ("sex",)  # a Macedonian ѕ is not in those alphabets

    def test_letters_of_their_own_are_not_folded(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, {"language": "da", "sexual_terms": ["brøfed"]})
        assert policy.check("zorbling brøfed").blocked
        assert not policy.check("zorbling brofed").blocked


class TestAgeGrammar:
    @pytest.mark.parametrize(
        "text",
        [
            "tiv jahrz",
            "15 jahrz",
            "15jahrz",
            "vok jahrz",
            "under 16",
            "under 5 jahrz",
            "7 klaz",
            "15 anoz",
            "1 5 jahrz",
        ],
    )
    def test_minor_ages_in_the_languages_grammar(self, tmp_path: Path, text: str) -> None:
        policy = policy_of(tmp_path, AGE_LANG)
        assert policy.check(f"{text}, blarfed").blocked, text
        assert not policy.check(f"{text}, in a garden").blocked, text

    @pytest.mark.parametrize(
        "text",
        [
            "gar e tiv jahrz",
            "gar tiv jahrz",
            "25 jahrz",
            "sinz 15 jahrz",
            "under 5",
            "tivth klaz",
            "115 jahrz",
        ],
    )
    def test_adult_ages_durations_and_bigger_numbers(self, tmp_path: Path, text: str) -> None:
        assert not policy_of(tmp_path, AGE_LANG).check(f"{text}, blarfed").blocked, text
