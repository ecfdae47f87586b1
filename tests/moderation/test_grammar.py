"""Grammar and evasion mechanisms of the rules, with made-up words in made-up languages.

As in test_languages.py, "zorbling" is a minor term and "blarfed" a sexual term (the base file);
each test writes the piece of grammar it exercises: terms whose words may stand anywhere,
words innocent in another language, letters that show a language, exact words, letter-spaced
words inside phrases, hidden letters inside phrases, an age that shows its language,
transliterated Cyrillic terms, French elision, exceptions over joined words, and endings that are
vowel signs. No abusive prompt is spelled out here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from talos_moderation.policy import POLICY_UNAVAILABLE, PromptPolicy

from .test_languages import AFFIX_LANG, AGE_LANG, UNSPACED_LANG, policy_of, write_rules


def blocked(policy: PromptPolicy, text: str) -> bool:
    return policy.check(text).blocked


TOGETHER_LANG: dict[str, Any] = {"language": "xx", "minor_together_terms": ["glimp|glamp snorzel*"]}
OWN_LANG: dict[str, Any] = {
    "language": "xx",
    "sexual_terms": ["pluvo"],
    "minor_weak_terms": ["snib"],
    "evidence_words": ["tri"],
}
INNOCENT_LANG: dict[str, Any] = {
    "language": "yy",
    "innocent_words": ["pluvo"],
    "evidence_words": ["ka", "mo"],
}
CYRILLIC_LANG: dict[str, Any] = {
    "language": "ru",
    "romanized": True,
    "suffixes": ["а", "ы"],
    "minor_terms": ["дзымбрик", "шмырк+", "кот"],
    "sexual_terms": ["бларфет"],
}


class TestTogetherTerms:
    def test_words_count_together_in_any_order_and_distance(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, TOGETHER_LANG)
        assert blocked(policy, "glimp with the snorzels, blarfed")
        assert blocked(policy, "snorzelt on the shelf, a glamp, blarfed")
        assert not blocked(policy, "glimp, blarfed") and not blocked(policy, "snorzel, blarfed")
        assert not blocked(policy, "glimp with the snorzels in the garden")

    def test_a_together_term_of_one_word_fails_closed(self, tmp_path: Path) -> None:
        write_rules(tmp_path, {"language": "xx", "minor_together_terms": ["glimp"]})
        policy = PromptPolicy.load(tmp_path)
        assert not policy.available and policy.check("a cat").category == POLICY_UNAVAILABLE


class TestInnocentWords:
    """A term that is an ordinary word of another language counts unless that language shows
    through its evidence words, or wherever its own language shows."""

    def test_innocent_word_vetoed_by_the_other_language(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, OWN_LANG, INNOCENT_LANG)
        assert blocked(policy, "zorbling pluvo")  # no language shows: the term counts
        assert not blocked(policy, "zorbling ka pluvo mo")  # an ordinary word there
        assert blocked(policy, "zorbling ka pluvo tri")  # its own language shows too

    def test_the_word_itself_shows_neither_language(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, OWN_LANG, INNOCENT_LANG)
        assert not blocked(policy, "snib pluvo")  # pluvo is no evidence of xx for its weak term
        assert blocked(policy, "snib pluvo tri")


class TestEvidenceLetters:
    def test_a_letter_of_the_language_shows_it(self, tmp_path: Path) -> None:
        lang = {"language": "xx", "minor_weak_terms": ["snib"], "evidence_letters": "ŧ"}
        policy = policy_of(tmp_path, lang)
        assert not blocked(policy, "snib blarfed")
        assert blocked(policy, "snib blarfed, ŧoma")

    def test_letters_need_weak_terms_or_innocent_words(self, tmp_path: Path) -> None:
        write_rules(tmp_path, {"language": "xx", "minor_terms": ["snorp"], "evidence_letters": "ŧ"})
        assert not PromptPolicy.load(tmp_path).available


class TestExactWords:
    def test_exact_word_takes_no_affix_and_no_repeats(self, tmp_path: Path) -> None:
        lang = {"language": "xx", "suffixes": ["a"], "sexual_terms": ["gol=", "snorzelt="]}
        policy = policy_of(tmp_path, lang)
        assert blocked(policy, "zorbling gol") and blocked(policy, "zorbling snorzelt")
        assert not blocked(policy, "zorbling gola")  # an ending makes another word
        assert not blocked(policy, "zorbling gooool")
        assert not blocked(policy, "zorbling presnorzelted")  # not inside a longer word


class TestSpacedWords:
    def test_spaced_word_with_an_ending_or_inside_a_phrase(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, AFFIX_LANG)
        assert blocked(policy, "g l i m m e k blarfed")  # glimm+ with the ending ek
        assert blocked(policy, "dak f e n blarfed")  # the phrase "dak fen"
        assert blocked(policy, "i g l i m m e k blarfed")  # a one-letter word before the run
        assert not blocked(policy, "g l i m m e k in the garden")

    def test_spaced_characters_of_a_script_without_spaces(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, UNSPACED_LANG)
        assert blocked(policy, "甲 乙 丙丁")
        assert not blocked(policy, "甲 乙 戊")


class TestMaskedWordInsidePhrase:
    def test_hidden_letter_in_one_word_of_a_phrase(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, AFFIX_LANG)
        assert blocked(policy, "dak f*n blarfed") and blocked(policy, "d#k fen blarfed")
        assert not blocked(policy, "dak f*n in the garden")


class TestAgeShowsItsLanguage:
    def test_age_in_a_language_grammar_counts_as_evidence(self, tmp_path: Path) -> None:
        lang = {**AGE_LANG, "sexual_weak_terms": ["glorf"], "evidence_words": ["plok"]}
        policy = policy_of(tmp_path, lang)
        assert blocked(policy, "tiv jahrz glorf")  # an age in zz's own grammar shows zz
        assert not blocked(policy, "zorbling glorf")
        assert not blocked(policy, "gar jahrz glorf")  # an adult age states no minor


class TestTransliteration:
    @pytest.mark.parametrize(
        "text",
        ["dzymbrik blarfed", "dzimbriki blarfed", "shmyrka blarfed", "šmyrka blarfed", "schmyrka blarfed"],
    )
    def test_latin_spellings_of_cyrillic_terms(self, tmp_path: Path, text: str) -> None:
        assert blocked(policy_of(tmp_path, CYRILLIC_LANG), text)

    def test_short_skeletons_and_other_words_do_not_count(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, CYRILLIC_LANG)
        assert not blocked(policy, "kot blarfed")  # too short to tell from other words
        assert blocked(policy, "zorbling blarfet")
        assert not blocked(policy, "shmyrk in the garden")

    def test_a_language_without_a_table_fails_closed(self, tmp_path: Path) -> None:
        write_rules(tmp_path, {**CYRILLIC_LANG, "language": "qq"})
        assert not PromptPolicy.load(tmp_path).available


class TestElisionAndJoins:
    def test_elided_article_is_a_word_of_its_own(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, {"language": "xx", "minor_terms": ["ozbra"]})
        assert blocked(policy, "l'ozbra blarfed") and blocked(policy, "d’ozbra, blarfed")
        assert blocked(policy, "zorbling, don't blarfed")

    def test_exceptions_cover_words_read_joined(self, tmp_path: Path) -> None:
        lang = {"language": "xx", "sexual_terms": ["vasp"], "sexual_exceptions": ["va sp"]}
        policy = policy_of(tmp_path, lang)
        assert blocked(policy, "zorbling vasp") and blocked(policy, "zorbling v a s p")
        assert not blocked(policy, "zorbling va sp")


class TestEndingsThatAreVowelSigns:
    def test_an_ending_made_of_a_vowel_sign(self, tmp_path: Path) -> None:
        lang = {"language": "xx", "suffixes": ["ों"], "minor_terms": ["कखग"]}
        policy = policy_of(tmp_path, lang)
        assert blocked(policy, "कखगों blarfed")
        assert not blocked(policy, "कखगों in the garden")


class TestLookalikeLettersInAges:
    def test_age_written_with_a_lookalike_letter(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, AGE_LANG)
        assert blocked(policy, "t\u0456v jahrz blarfed")  # Cyrillic і inside a Latin number word


class TestAtSignAsMask:
    def test_at_sign_hides_a_letter_as_well_as_standing_for_a(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, {"language": "xx", "minor_terms": ["snorp"]})
        assert blocked(policy, "snorp blar@ed")  # @ for the hidden f
        assert blocked(policy, "snorp bl@rfed")  # @ for a
        assert not blocked(policy, "snorp, write to me@example.org")


class TestMaskedStemsAndAges:
    def test_hidden_letter_in_a_stem_word_or_an_age_word(self, tmp_path: Path) -> None:
        lang = {**AGE_LANG, "sexual_terms": ["verfloddisch*"]}
        policy = policy_of(tmp_path, lang)
        assert blocked(policy, "zorbling v*rfloddische")  # a word the stem begins
        assert blocked(policy, "tiv jah#z blarfed")  # the unit of an age
        assert not blocked(policy, "tiv jah#z in the garden")

    def test_hidden_letter_in_a_word_with_an_ending(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, {"language": "xx", "suffixes": ["ek"], "minor_terms": ["snorpa"]})
        assert blocked(policy, "sn#rpaek blarfed")


class TestSpacedRunsBesideAWord:
    def test_spaced_letters_glued_to_the_word_beside_them(self, tmp_path: Path) -> None:
        policy = policy_of(tmp_path, AGE_LANG)
        assert blocked(policy, "15 ja h r z blarfed")  # "ja" stayed whole, "h r z" did not
        assert blocked(policy, "15 j a h rz blarfed")
        assert not blocked(policy, "15 ja h r z in the garden")


class TestLeetNumbers:
    def test_number_kept_before_leet_letters(self, tmp_path: Path) -> None:
        policy = policy_of(
            tmp_path, {**AGE_LANG, "ages": {**AGE_LANG["ages"], "anchors": ["jahrz", "=under"]}}
        )
        assert blocked(policy, "15jahr2 blarfed")  # 2 for z; 15 stays the number
        assert not blocked(policy, "35jahr2 blarfed")
