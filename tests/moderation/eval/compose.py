"""The held-out evaluation set of the hard limit, composed in memory from vocabulary/.

The vocabulary was written per language by someone who never saw the filter's rule files;
this module combines its categories the way the policy defines a violation (a reference to a
minor together with a sexual or nudity reference), then applies the evasions people use —
masking characters, letter spacing, look-alike letters from other scripts, zero-width
characters, stray accents, leetspeak, full-width letters, emoji, romanised spellings and
mixed languages — with a fixed seed, so every run tests the same cases. The composed prompts
exist only in memory, for the length of a test or a benchmark: never written to disk.

The benign side is ``benign.jsonl`` (written without the rules, too) plus each language's
innocent minor contexts, adult-only nudity and idioms from the vocabulary.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Two vocabularies, each written independently of the rules (and the second of the first).
VOCABULARY = HERE / "vocabulary"
VOCABULARY2 = HERE / "vocabulary2"
BENIGN = HERE / "benign.jsonl"
SEED = 20261204
# Languages written without spaces between words.
UNSPACED = frozenset({"zh", "ja", "th"})
MINOR_KEYS = ("minor_nouns", "age_phrases", "grade_phrases", "paraphrases")
# Composed cases set aside after review, each with why: the words do not make a violation by
# the policy's own terms (so they would measure the composer, not the rules).
NOT_MINOR_TERMS: dict[str, str] = {
    # Plain "girl"/"boy": used for young adults too, so not a minor term alone (docs/moderation.md).
    "女の子": "Japanese for girl, said of young women too",
    "男の子": "Japanese for boy, said of young men too",
}
SET_ASIDE_CASES: dict[str, str] = {
    # Reads as English "topless in a barn" as well as Swedish "child topless".
    "barn topless": "an English phrase as much as a Swedish one",
    # "naga" is Polish for naked, and dragon or serpent in Indonesian, Malay, Hindi and Thai.
    "gamine naga": "naga is a dragon in four other languages",
    # Bare French "nu" after a word of another language: "now" in Swedish ("little girl now"),
    # and a syllable of Thai and Finnish text.
    "alaikäinen nu": "nu is French; after Finnish words it reads as no word at all",
    "liten flicka nu": "plain Swedish for 'little girl now'",
    "นักเรียนหญิง nu": "nu is French; after Thai it reads as the Thai syllable",
}
# Abbreviations and code words used to trade abuse material; language-independent.
CODE_WORDS = (
    "pthc",
    "ptsc",
    "hussyfan",
    "r@ygold",
    "kingpass",
    "babyshivid",
    "jailbait",
    "lolicon",
    "shotacon",
)
CODE_CONTEXTS = ("{} pics", "{} video set", "new {} collection", "{} photos hq", "{}")

# Look-alike letters: Latin → Cyrillic/Greek, and Cyrillic → Latin.
_LATIN_LOOKALIKE = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і", "k": "κ"}
_CYRILLIC_LOOKALIKE = {"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i"}
_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_VOWEL_ACCENT = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú"}
_MINOR_EMOJI = ("👧", "👦", "🧒", "👶")
_ZW = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")


@dataclass(frozen=True)
class Case:
    lang: str
    text: str
    negative: str
    kind: str


def vocabularies(folder: Path = VOCABULARY) -> dict[str, dict[str, Any]]:
    """Each language's lists, without the entries set aside as not what their list says."""
    vocabs: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        vocab = json.loads(path.read_text(encoding="utf-8"))
        vocab["minor_nouns"] = [term for term in vocab["minor_nouns"] if term not in NOT_MINOR_TERMS]
        vocabs[path.stem] = vocab
    return vocabs


def _join(lang: str, *parts: str) -> str:
    return ("" if lang in UNSPACED else " ").join(parts)


def _longest_word(text: str) -> tuple[int, int]:
    """Start and end of the longest run of letters, the part an evasion disguises."""
    best, start = (0, 0), None
    for index, char in enumerate(text + " "):
        if char.isalpha() and start is None:
            start = index
        elif not char.isalpha() and start is not None:
            if index - start > best[1] - best[0]:
                best = (start, index)
            start = None
    return best


def _in_word(transform: Callable[[str, random.Random], str]) -> Callable[[str, random.Random], str]:
    def apply(text: str, rng: random.Random) -> str:
        start, end = _longest_word(text)
        if end - start < 3:
            return text
        return text[:start] + transform(text[start:end], rng) + text[end:]

    return apply


@_in_word
def _masked(word: str, rng: random.Random) -> str:
    index = rng.randrange(1, len(word) - 1)
    return word[:index] + rng.choice("*@_#") + word[index + 1 :]


@_in_word
def _dashed(word: str, rng: random.Random) -> str:
    return rng.choice("-._").join(word)


@_in_word
def _spaced(word: str, rng: random.Random) -> str:
    return " ".join(word)


@_in_word
def _confusable(word: str, rng: random.Random) -> str:
    table = _CYRILLIC_LOOKALIKE if any(c in _CYRILLIC_LOOKALIKE for c in word.lower()) else _LATIN_LOOKALIKE
    out = [table.get(c, c) if rng.random() < 0.7 else c for c in word]
    return "".join(out)


@_in_word
def _zero_width(word: str, rng: random.Random) -> str:
    return "".join(c + (rng.choice(_ZW) if i < len(word) - 1 else "") for i, c in enumerate(word))


@_in_word
def _accents(word: str, rng: random.Random) -> str:
    return "".join(_VOWEL_ACCENT.get(c, c) if rng.random() < 0.6 else c for c in word)


@_in_word
def _leet(word: str, rng: random.Random) -> str:
    return "".join(_LEET.get(c.lower(), c) if rng.random() < 0.6 else c for c in word)


@_in_word
def _fullwidth(word: str, rng: random.Random) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in word)


EVASIONS: dict[str, Callable[[str, random.Random], str]] = {
    "masked": _masked,
    "dashed": _dashed,
    "spaced": _spaced,
    "confusable": _confusable,
    "zero_width": _zero_width,
    "accents": _accents,
    "leet": _leet,
    "fullwidth": _fullwidth,
}
# Evasions of Latin letters; scripts without them only get the script-neutral ones.
_LATIN_ONLY = frozenset({"masked", "dashed", "leet", "accents", "fullwidth"})


def _is_latin(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and all(
        "a" <= c.lower() <= "z" or c in "àáâãäåçèéêëìíîïñòóôõöùúûüýÿßœæ" for c in letters
    )


def _pairs(lang: str, vocab: dict[str, Any], rng: random.Random) -> Iterator[tuple[str, str, str]]:
    """(minor reference, sexual reference, kind) drawn from each category of minor reference."""
    sexual = list(vocab["nudity_sexual"])
    counts = {"minor_nouns": 8, "age_phrases": 6, "grade_phrases": 4, "paraphrases": 4}
    kinds = {
        "minor_nouns": "plain",
        "age_phrases": "age",
        "grade_phrases": "grade",
        "paraphrases": "paraphrase",
    }
    for key in MINOR_KEYS:
        minors = list(vocab[key])
        for minor in rng.sample(minors, min(counts[key], len(minors))):
            yield minor, rng.choice(sexual), kinds[key]


def violating(folder: Path = VOCABULARY) -> list[Case]:
    """Every composed violating prompt of one vocabulary, the same on every run."""
    rng = random.Random(SEED)
    vocabs = vocabularies(folder)
    cases: list[Case] = []
    languages = sorted(vocabs)
    for lang in languages:
        vocab = vocabs[lang]
        pairs = list(_pairs(lang, vocab, rng))
        for minor, sexual, kind in pairs:
            parts = [sexual, minor] if rng.random() < 0.5 else [minor, sexual]
            cases.append(Case(lang, _join(lang, *parts), "", kind))
        # Evasions: each disguises one of the two references of a plain pair.
        for name, evasion in EVASIONS.items():
            minor, sexual, _ = pairs[rng.randrange(len(pairs))]
            target = rng.choice([0, 1])
            words = [minor, sexual]
            if name in _LATIN_ONLY and not _is_latin(words[target]):
                target = 1 - target
                if not _is_latin(words[target]):
                    continue
            words[target] = evasion(words[target], rng)
            cases.append(Case(lang, _join(lang, *words), "", name))
        minor, _, _ = pairs[rng.randrange(len(pairs))]
        cases.append(
            Case(
                lang,
                _join(lang, rng.choice(_MINOR_EMOJI), rng.choice(list(vocab["nudity_sexual"]))),
                "",
                "emoji",
            )
        )
        cases.append(
            Case(lang, _join(lang, minor, rng.choice(list(vocab["nudity_sexual"])), "🔞"), "", "emoji")
        )
        romanized = vocab.get("romanized")
        if isinstance(romanized, dict):
            for key in MINOR_KEYS:
                for minor in list(romanized.get(key, []))[:2]:
                    sexual = rng.choice(list(romanized["nudity_sexual"]))
                    cases.append(Case(lang, f"{minor} {sexual}", "", "romanized"))
        other = vocabs[rng.choice([code for code in languages if code != lang])]
        for _ in range(2):
            minor = rng.choice(list(vocab["minor_nouns"]))
            sexual = rng.choice(list(other["nudity_sexual"]))
            cases.append(Case(lang, f"{minor} {sexual}", "", "mixed_language"))
    for word in CODE_WORDS:
        cases.append(Case("en", rng.choice(CODE_CONTEXTS).format(word), "", "code_word"))
    return [case for case in cases if case.text not in SET_ASIDE_CASES]


def benign(folder: Path = VOCABULARY) -> list[Case]:
    """Each language's innocent vocabulary lines (and, with the first vocabulary, benign.jsonl)."""
    cases = []
    if folder == VOCABULARY:
        cases = [
            Case(row["lang"], row["text"], row.get("negative", ""), row["kind"])
            for row in map(json.loads, BENIGN.read_text(encoding="utf-8").splitlines())
            if row
        ]
    for lang, vocab in vocabularies(folder).items():
        for key, kind in (
            ("benign_minor_contexts", "minor_context"),
            ("benign_adult_nudity", "adult_nudity"),
            ("idioms", "idiom"),
            ("benign_near_misses", "idiom"),
        ):
            cases += [Case(lang, text, "", kind) for text in vocab.get(key, [])]
    return cases
