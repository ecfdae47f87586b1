"""Lookups the matcher uses beyond whole words: inside words, affixes, masked letters.

* :class:`SubstringIndex` finds terms inside a longer word: long terms inside compounds and
  hashtags (``#wordparty``), and every term of a script written without spaces (Chinese,
  Japanese, Thai) wherever it stands in a run of text.
* :class:`AffixIndex` reads a word as a language's prefix + term + suffix: Arabic ``ال``/``و``/
  ``ب`` and Hebrew ``ה``/``ו``/``ב`` before a word, Korean particles and Slavic or Romance
  endings after it. A term written ``stem+`` needs an ending; ``stem*`` takes any continuation.
* :class:`MaskIndex` matches a word with hidden letters (``n?ked``) against the terms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from talos_moderation.policy.skeleton import script

# Scripts written without spaces between words: their terms are found inside any run of text.
UNSPACED_SCRIPTS = frozenset(
    {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "THAI", "LAO", "KHMER", "MYANMAR", "IDEOGRAPHIC"}
)


def unspaced(text: str) -> bool:
    """Whether ``text`` holds a character of a script written without spaces."""
    return any(not c.isascii() and script(c) in UNSPACED_SCRIPTS for c in text)


@dataclass
class SubstringIndex:
    """Terms found inside words: a term -> the lists it belongs to, probed by length."""

    terms: dict[str, set[str]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)

    def add(self, term: str, name: str) -> None:
        self.terms.setdefault(term, set()).add(name)
        if len(term) not in self.lengths:
            self.lengths = sorted({*self.lengths, len(term)})

    def hits(self, word: str) -> Iterable[tuple[int, int, set[str]]]:
        """(start, end, lists) of every term occurrence inside ``word``."""
        if not self.lengths or len(word) < self.lengths[0]:
            return
        terms, lengths, n = self.terms, self.lengths, len(word)
        for i in range(n - lengths[0] + 1):
            for size in lengths:
                if i + size > n:
                    break
                names = terms.get(word[i : i + size])
                if names:
                    yield i, i + size, names


@dataclass
class AffixIndex:
    """Each language's prefixes and suffixes, and the words of its terms they may attach to."""

    # language -> words and stems of its terms (the only stems worth reporting)
    vocab: dict[str, set[str]] = field(default_factory=dict)
    prefixes: dict[str, set[str]] = field(default_factory=dict)  # prefix -> languages
    suffixes: dict[str, set[str]] = field(default_factory=dict)  # suffix -> languages
    prefix_lengths: list[int] = field(default_factory=list)
    suffix_lengths: list[int] = field(default_factory=list)
    endings: dict[str, list[str]] = field(default_factory=dict)  # language -> its suffixes

    def add_language(self, lang: str, prefixes: Iterable[str], suffixes: Iterable[str]) -> None:
        self.vocab.setdefault(lang, set())
        suffixes = list(suffixes)
        self.endings.setdefault(lang, []).extend(suffixes)
        for table, lengths_name, items in (
            (self.prefixes, "prefix_lengths", prefixes),
            (self.suffixes, "suffix_lengths", suffixes),
        ):
            for item in items:
                if item:
                    table.setdefault(item, set()).add(lang)
                    setattr(self, lengths_name, sorted({*getattr(self, lengths_name), len(item)}))

    def has(self, lang: str) -> bool:
        return lang in self.vocab

    def keys(self, word: str) -> set[str]:
        """``lang:stem`` for every reading prefix + stem + suffix of a known stem (and
        ``lang:stem+`` when a suffix was there)."""
        out: set[str] = set()
        if not self.vocab:
            return out
        n = len(word)
        for p in (0, *self.prefix_lengths):
            if p + 2 > n:
                break
            plangs = self.prefixes.get(word[:p]) if p else None
            if p and not plangs:
                continue
            rest = word[p:]
            for s in (0, *self.suffix_lengths):
                if s + 2 > len(rest):
                    break
                if not p and not s:
                    continue
                slangs = self.suffixes.get(rest[-s:]) if s else None
                if s and not slangs:
                    continue
                langs = (plangs & slangs) if plangs and slangs else (plangs or slangs or set())
                stem = rest[: len(rest) - s] if s else rest
                for lang in langs:
                    if stem in self.vocab[lang]:
                        out.add(f"{lang}:{stem}")
                        if s:
                            out.add(f"{lang}:{stem}+")
        return out


@dataclass
class MaskIndex:
    """Single-word terms by length and by their first and last letters, for words with hidden
    letters: a pattern is compared only with the terms that share its known ends."""

    by_ends: dict[tuple[int, str, str], set[str]] = field(default_factory=dict)
    by_first: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    by_last: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    by_length: dict[int, set[str]] = field(default_factory=dict)

    def add(self, term: str) -> None:
        if len(term) >= 3:
            self.by_ends.setdefault((len(term), term[0], term[-1]), set()).add(term)
            self.by_first.setdefault((len(term), term[0]), set()).add(term)
            self.by_last.setdefault((len(term), term[-1]), set()).add(term)
            self.by_length.setdefault(len(term), set()).add(term)

    def matches(self, pattern: str) -> list[str]:
        """Terms that ``pattern`` (``?`` = one unknown letter) can stand for."""
        first, last, size = pattern[0], pattern[-1], len(pattern)
        if first != "?" and last != "?":
            candidates = self.by_ends.get((size, first, last), set())
        elif first != "?":
            candidates = self.by_first.get((size, first), set())
        elif last != "?":
            candidates = self.by_last.get((size, last), set())
        else:
            candidates = self.by_length.get(size, set())
        # Sorted: the caller keeps the first few, and the same prompt must get the same verdict in
        # every process (set order changes with the interpreter's string hashing).
        return sorted(
            t for t in candidates if all(p == "?" or p == c for p, c in zip(pattern, t, strict=True))
        )
