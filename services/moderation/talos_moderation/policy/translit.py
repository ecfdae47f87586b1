"""Cyrillic terms found in Latin transliteration, whichever scheme the writer followed.

Russian, Ukrainian and Bulgarian are often typed in Latin letters, each writer with their own
scheme: ``devochka``, ``devočka``, ``devotchka``; ``rebenok``, ``rebjonok``; ``divchynka``,
``divčinka``. Rather than list the spellings, both sides are reduced to one *skeleton*: a
Cyrillic term is first transliterated (with its language's own table: Ukrainian ``г`` is ``h``,
Bulgarian ``ъ`` is ``a``), then every Latin spelling is folded the same way — ``shch``/``sch``/
``š`` to ``s``, ``ch``/``tch``/``č`` to ``c``, ``zh``/``ž`` to ``z``, ``kh``/``x`` to ``h``,
``ts``/``tz`` to ``c``, ``ya``/``ja``/``ia`` to ``a`` (and so ``e``, ``o``, ``u``), ``y``/``j``
to ``i``, doubled consonants to one. A Latin word then answers to the terms whose skeleton it
shares, with the language's endings folded alike (``devochki``, ``devochku``).

Skeletons are coarse, so short ones are not used: a whole word needs :data:`MIN_WORD` letters of
skeleton, a stem :data:`MIN_STEM` before its ending, a ``stem*`` :data:`MIN_PREFIX`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

MIN_WORD = 5
MIN_STEM = 4
MIN_PREFIX = 6
KEY = "§"

_BASE = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s",
    "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch",
    "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya", "і": "i", "ї": "yi", "є": "ye",
    "ґ": "g", "ў": "u",
}  # fmt: skip
_TABLES = {
    "ru": _BASE,
    "uk": {**_BASE, "г": "h", "и": "y"},
    "bg": {**_BASE, "ъ": "a", "щ": "sht"},
}
_FOLD = re.compile(r"shch|sch|tch|ch|sh|zh|kh|ts|tz|cz|[yji][aeou]|[xwyj]")
_FOLDED = {"shch": "s", "sch": "s", "tch": "c", "ch": "c", "sh": "s", "zh": "z", "kh": "h", "ts": "c",
           "tz": "c", "cz": "c", "x": "h", "w": "v", "y": "i", "j": "i"}  # fmt: skip
_VOWEL = {"a": "a", "e": "e", "o": "e", "u": "u"}  # ё is written е once accents are gone
_DOUBLE = re.compile(r"([b-df-hj-np-tv-z])\1+")


def schemes() -> frozenset[str]:
    """The languages with a transliteration table."""
    return frozenset(_TABLES)


def _fold_piece(match: re.Match[str]) -> str:
    piece = match.group()
    if len(piece) == 2 and piece[0] in "yji" and piece[1] in _VOWEL:
        return _VOWEL[piece[1]]
    return _FOLDED[piece]


@lru_cache(maxsize=65536)
def latin_skeleton(word: str) -> str:
    """The skeleton of a word in Latin letters (accents already stripped, lower case)."""
    if not word.isascii():
        word = "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))
    folded = _FOLD.sub(_fold_piece, word)
    folded = folded.replace("ii", "i")
    return _DOUBLE.sub(r"\1", folded)


def cyrillic_skeleton(word: str, lang: str) -> str:
    """The skeleton of a normalised Cyrillic word (empty when it holds other letters)."""
    table = _TABLES[lang]
    if not all(c in table for c in word):
        return ""
    return latin_skeleton("".join(table[c] for c in word))


@dataclass
class TranslitIndex:
    """Skeletons of the Cyrillic terms of the transliterated languages, and of their endings."""

    endings: dict[str, set[str]] = field(default_factory=dict)  # language -> ending skeletons
    vocab: dict[str, set[str]] = field(default_factory=dict)  # language -> word and stem skeletons
    prefix_stems: set[str] = field(default_factory=set)
    prefix_lengths: list[int] = field(default_factory=list)
    # Ending skeleton -> languages, and the lengths of the endings, for reading a word's end.
    ending_languages: dict[str, set[str]] = field(default_factory=dict)
    ending_sizes: list[int] = field(default_factory=list)

    def add_language(self, lang: str, suffixes: list[str]) -> None:
        if lang not in _TABLES:
            raise ValueError(f"no transliteration table for '{lang}'")
        self.vocab.setdefault(lang, set())
        ends = self.endings.setdefault(lang, set())
        for suffix in suffixes:
            skeleton = cyrillic_skeleton(suffix, lang)
            if skeleton:
                ends.add(skeleton)
                self.ending_languages.setdefault(skeleton, set()).add(lang)
        self.ending_sizes = sorted({len(e) for e in self.ending_languages})

    def has(self, lang: str) -> bool:
        return lang in self.vocab

    def word_keys(self, word: str, marker: str, lang: str, *, in_phrase: bool = False) -> set[str]:
        """Keys a term word of ``lang`` answers to in Latin letters: none for a short skeleton,
        unless the word is one of a phrase's (``bez drehi``), whose other words narrow it."""
        skeleton = cyrillic_skeleton(word, lang)
        if in_phrase and not marker and skeleton:
            self.vocab[lang].add(skeleton)
            return {f"{KEY}{skeleton}", f"{KEY}{lang}:{skeleton}"}
        if marker == "*":
            if len(skeleton) < MIN_PREFIX:
                return set()
            self.prefix_stems.add(skeleton)
            self.prefix_lengths = sorted({*self.prefix_lengths, len(skeleton)})
            return {f"{KEY}{skeleton}*"}
        if marker == "+":
            if len(skeleton) < MIN_STEM:
                return set()
            self.vocab[lang].add(skeleton)
            return {f"{KEY}{lang}:{skeleton}+"}
        if len(skeleton) < MIN_WORD:
            return set()
        self.vocab[lang].add(skeleton)
        return {f"{KEY}{skeleton}", f"{KEY}{lang}:{skeleton}"}

    def keys(self, form: str) -> set[str]:
        """Keys of a word in Latin letters: its skeleton, and each reading as stem + ending."""
        if not self.vocab or not form.isalpha() or not form.isascii():
            return set()
        skeleton = latin_skeleton(form)
        out = {f"{KEY}{skeleton}"}
        n = len(skeleton)
        for size in self.ending_sizes:
            if n - size < MIN_STEM:
                break
            langs = self.ending_languages.get(skeleton[n - size :])
            if langs:
                stem = skeleton[: n - size]
                for lang in langs:
                    if stem in self.vocab[lang]:
                        out.add(f"{KEY}{lang}:{stem}+")
                        out.add(f"{KEY}{lang}:{stem}")
        for size in self.prefix_lengths:
            if size > n:
                break
            if skeleton[:size] in self.prefix_stems:
                out.add(f"{KEY}{skeleton[:size]}*")
        return out
