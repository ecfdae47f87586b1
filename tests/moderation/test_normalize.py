"""Every normalisation defeats its evasion, with made-up trigger words from test_rules.json.

"zorbling" stands for a minor term, "blarfed" for a sexual term, "snorkelwump" for a term
that blocks on its own; the hatching chick emoji stands for a child emoji.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talos_moderation.policy import MINOR_SEXUAL, PromptPolicy
from talos_moderation.policy.normalize import normalize, tokens


def _map(table: dict[str, str]) -> Callable[[str], str]:
    return lambda word: "".join(table.get(c, c) for c in word)


def _shift(base: int) -> Callable[[str], str]:
    return lambda word: "".join(chr(base + ord(c) - ord("a")) for c in word)


def _cycle_join(pieces: list[str]) -> Callable[[str], str]:
    return lambda word: "".join(c + pieces[i % len(pieces)] for i, c in enumerate(word))


# Each evasion rewrites one word the way people hide it from a filter.
EVASIONS: dict[str, Callable[[str], str]] = {
    "plain": lambda w: w,
    "case": lambda w: "".join(c.upper() if i % 2 else c for i, c in enumerate(w)),
    "nfkc_fullwidth": lambda w: "".join(chr(ord(c) + 0xFEE0) for c in w),
    "nfkc_math_bold": _shift(0x1D41A),
    "nfkc_circled": _shift(0x24D0),
    "letter_emoji": _shift(0x1F170),
    "accents": _map({"a": "á", "e": "é", "i": "î", "o": "ö", "u": "ü"}),
    "combining_marks": lambda w: "".join(c + "\u0301" for c in w),
    "zero_width_space": "\u200b".join,
    "zero_width_others": _cycle_join(["\u200c", "\u200d", "\u2060", "\ufeff", "\u034f"]),
    "soft_hyphen": "\u00ad".join,
    "bidi_controls": lambda w: w[:3] + "\u202e" + w[3:] + "\u202c",
    "tag_characters": lambda w: w[:4] + "\U000e0041" + w[4:],
    "cyrillic_lookalikes": _map({"o": "о", "a": "а", "e": "е"}),
    "letter_spaced": " ".join,
    "letter_dotted": ".".join,
    "letter_hyphenated": "-".join,
    "letter_underscored": "_".join,
    "split_in_two": lambda w: w[:4] + " " + w[4:],
    "split_in_three": lambda w: w[:3] + " " + w[3:5] + " " + w[5:],
    "leetspeak_digits": _map({"o": "0", "i": "1", "e": "3", "a": "4", "s": "5", "l": "1"}),
    "leetspeak_symbols": _map({"a": "@", "i": "!", "s": "$"}),
    "leetspeak_spaced": lambda w: " ".join(_map({"o": "0", "i": "1", "e": "3", "a": "4"})(w)),
    "repeated_letters": _map({"a": "aaa", "e": "eee", "i": "iiii", "o": "ooo"}),
    "doubled_letter": lambda w: w[:3] + w[3] + w[3:],
    "emphasis_weight": lambda w: f"({w}:1.3)",
    "emphasis_brackets": lambda w: f"[{w}]",
    "emphasis_nested": lambda w: f"(({w}))",
    "emphasis_braces": lambda w: f"{{{w}:0.8}}",
    "emphasis_plus": lambda w: w + "++",
    "lora_tag": lambda w: f"<lora:{w}:0.8>",
    "possessive": lambda w: w + "'s",
    "hashtag_glued": lambda w: "#" + w + "party",
    "fullwidth_and_zero_width": lambda w: "\u200b".join(chr(ord(c) + 0xFEE0) for c in w),
}


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_each_evasion_is_defeated(test_policy: PromptPolicy, name: str) -> None:
    evade = EVASIONS[name]
    verdict = test_policy.check(f"a photo, {evade('zorbling')}, {evade('blarfed')}")
    assert verdict.blocked, name
    assert verdict.category == MINOR_SEXUAL


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_one_context_alone_never_blocks(test_policy: PromptPolicy, name: str) -> None:
    """The same spellings with only one of the two contexts are allowed: the rule needs both."""
    evade = EVASIONS[name]
    assert not test_policy.check(f"a photo, {evade('zorbling')}, smiling in a garden").blocked
    assert not test_policy.check(f"a smiling cat, {evade('blarfed')}").blocked


@pytest.mark.parametrize(
    "text",
    [
        "a wee snark, blarfed",  # a phrase
        "weesnark blarfed",  # a phrase written as one word
        "w e e s n a r k blarfed",  # a spaced-out phrase
        "🐣 blarfed",  # a child emoji
        "🐣🏽 blarfed",  # with a skin tone modifier
        "zorbling 🫧",  # a sexual emoji
        "zorbling\n\t\rblarfed",  # control whitespace
        "zorbling, no frobwear",  # a sexual phrase
        "zorblings unfrobbed",
    ],
)
def test_phrases_and_emoji(test_policy: PromptPolicy, text: str) -> None:
    assert test_policy.check(text).blocked, text


AGES = [
    "15 yo",
    "15yo",
    "15 y/o",
    "15 y.o.",
    "15-year-old",
    "15 year old",
    "15 years old",
    "15yrs old",
    "15 yr old",
    "fifteen year old",
    "fifteen-year-old",
    "fifteenyo",
    "sixteen years of age",
    "age 15",
    "age: 15",
    "aged fifteen",
    "aged 9",
    "ages 12",
    "twelve yo",
    "under 16",
    "under the age of 18",
    "younger than 16",
    "8th grader",
    "eighth grade",
    "15th birthday",
    "6 month old",
    "3 months old",
    "2 day old",
    "1 5 y o",
    "f1fteen year old",
    "fiiifteen year old",
    "15 yooo",
    "FIFTEEN YEAR OLD",
    "１５ ｙｏ",
]


@pytest.mark.parametrize("age", AGES)
def test_ages_under_18_are_a_minor_context(test_policy: PromptPolicy, age: str) -> None:
    assert test_policy.check(f"{age}, blarfed").blocked, age
    assert not test_policy.check(f"{age}, smiling").blocked, age


ADULT_OR_NOT_AN_AGE = [
    "18 year old",
    "18yo",
    "eighteen years old",
    "twenty-one year old",
    "twenty one yo",
    "21yo",
    "age 30",
    "aged forty",
    "100 year old",
    "a 1000 year old",
    "one hundred fifteen year old",
    "15 cats",
    "35mm film",
    "15 years",
    "under 5 minutes",
    "ten",
    "(smile:1.5)",
    "4k, 8k uhd",
]


@pytest.mark.parametrize("text", ADULT_OR_NOT_AN_AGE)
def test_adult_ages_and_other_numbers_do_not_count(test_policy: PromptPolicy, text: str) -> None:
    assert not test_policy.check(f"{text}, blarfed").blocked, text


@pytest.mark.parametrize(
    "text",
    [
        "snorkelwump",
        "5n0rkelwump",
        "s n o r k e l w u m p",
        "SNORKELWUMP",
        "(snorkelwump:1.2)",
        "snorkel wump",
    ],
)
def test_standalone_terms_block_alone(test_policy: PromptPolicy, text: str) -> None:
    assert test_policy.check(text).blocked


@pytest.mark.parametrize(
    "text",
    [
        "a zorbling beside blarfed pottery",  # sexual exception phrase
        "zorbling moss on a rock, blarfed",  # minor exception phrase
        "zorblingrad city, blarfed",  # substring exception word
        "zorb blarf",
        "a cat on a sofa",
    ],
)
def test_exceptions_and_near_misses_are_allowed(test_policy: PromptPolicy, text: str) -> None:
    assert not test_policy.check(text).blocked, text


def test_normalize_pieces() -> None:
    assert normalize("ＣＨＩＬＤ") == "child"
    assert normalize("a\u200bb\u00adc\ufeffd") == "abcd"
    assert normalize("Crème Brûlée") == "creme brulee"
    assert normalize("(cat:1.3) [dog:0.5]").replace(" ", "") == "(cat)[dog]"
    assert normalize("a\u2800b") == "a b"
    assert tokens(normalize("b@d w0rd, kid's toy!")) == ["b@d", "w0rd", "kid", "toy!"]
    # A Thai abbreviation glued to the word before it (Thai has no spaces) is a word again.
    assert tokens(normalize("สวัสดีป.5")) == ["สวัสดี", "ป", "5"]
    assert tokens(normalize("สวัสดี 5.5")) == ["สวัสดี", "5", "5"]


_INVISIBLE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.lists(_INVISIBLE, max_size=2)), min_size=16, max_size=16),
)
def test_any_mix_of_case_and_invisible_characters_is_defeated(
    test_policy: PromptPolicy, mix: list[tuple[bool, list[str]]]
) -> None:
    out = []
    for ch, (upper, junk) in zip("zorbling blarfed", mix, strict=True):
        out.append((ch.upper() if upper else ch) + "".join(junk))
    assert test_policy.check("".join(out)).blocked
