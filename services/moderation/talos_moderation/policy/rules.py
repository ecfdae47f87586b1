"""The versioned rule file and the word matcher built from it.

The rule file (JSON) holds the term lists; the code holds only the mechanism, so the lists
can change (and their version with them) without a code change. Each list entry is a word or
a phrase; it is normalised exactly as prompts are, so an entry matches however a prompt
spells it. A ``*_exceptions`` list names phrases inside which a term does not count
(``minor key`` is music, not a person).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from talos_moderation.policy.normalize import collapse, forms, normalize, plain, tokens

PACKAGED_RULES = "rules.json"
LISTS = ("minor", "sexual", "standalone", "negative_adulthood", "negative_clothing")


class RulesError(ValueError):
    """The rule file is missing, unreadable or incomplete."""


def packaged_rules_text() -> str:
    return resources.files("talos_moderation.policy").joinpath(PACKAGED_RULES).read_text("utf-8")


def _term_words(entry: str) -> tuple[str, ...]:
    return tuple(plain(t) for t in tokens(normalize(entry)))


# Neighbouring words of at most this many letters are also read joined up ("c h i l d").
SHORT_WORD = 3
LONGEST_JOIN = 16
_CACHE_LIMIT = 50_000

Phrase = tuple[tuple[str, str], ...]  # each word with its collapsed form


@dataclass(frozen=True, slots=True)
class WordInfo:
    """Everything the matcher needs about one word, worked out once per distinct word."""

    word: str
    plain: str
    # The word is letters only and has no doubled letter: joins need no further reading.
    simple: bool
    exact: frozenset[str]
    collapsed: frozenset[str]
    # Lists with a one-word term here (whole word, or inside a long word).
    singles: frozenset[str]
    # (list, phrase) of terms of two words or more that may start here.
    starts: tuple[tuple[str, Phrase], ...]
    # (list, phrase) of exception phrases that may start here.
    exception_starts: tuple[tuple[str, Phrase], ...]
    # Whether a term may start here at all (most words: no).
    active: bool
    # The word can begin a term written together with its neighbours.
    may_join: bool
    # Short enough to be part of a spaced-out word ("c h i l d", "chi ld").
    short: bool


@dataclass
class Matcher:
    """Every term list, indexed together so a prompt's words are scanned once."""

    # Word (or "~" + its collapsed form) -> lists with that one-word term.
    _single: dict[str, set[str]] = field(default_factory=dict)
    # First word (or "~" + its collapsed form) -> (list, phrase) of terms of two words or more.
    _first: dict[str, list[tuple[str, Phrase]]] = field(default_factory=dict)
    # Terms written together ("little girl" -> "littlegirl") -> list names.
    _joined: dict[str, set[str]] = field(default_factory=dict)
    _joined_collapsed: dict[str, set[str]] = field(default_factory=dict)
    # List name -> one pattern of its words long enough to be found inside a longer word.
    _substrings: dict[str, re.Pattern[str]] = field(default_factory=dict)
    _any_substring: re.Pattern[str] | None = None
    _substring_exceptions: frozenset[str] = frozenset()
    _longest: int = 0
    # Every beginning of a term written together (and of its collapsed form).
    _prefixes: set[str] = field(default_factory=set)
    _cache: dict[str, WordInfo] = field(default_factory=dict)
    # The cached words at which a term (an exception phrase) may start.
    _active_words: set[str] = field(default_factory=set)
    _exception_words: set[str] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, entries: Iterable[str], exceptions: Iterable[str], substring_min: int) -> None:
        subs: set[str] = set()
        count = 0
        for entry in entries:
            words = _term_words(entry)
            if not words:
                continue
            count += 1
            if len(words) == 1:
                for key in {words[0], "~" + collapse(words[0])}:
                    self._single.setdefault(key, set()).add(name)
            else:
                self._add_phrase(name, words)
            joined = "".join(words)
            self._joined.setdefault(joined, set()).add(name)
            self._joined_collapsed.setdefault(collapse(joined), set()).add(name)
            for form in (joined, collapse(joined)):
                self._prefixes.update(form[:k] for k in range(1, len(form) + 1))
            self._longest = max(self._longest, len(joined))
            if substring_min and len(joined) >= substring_min:
                subs.add(joined)
        self.sizes[name] = count
        if subs:
            self._substrings[name] = _alternation(subs)
            everything = {p for pattern in self._substrings.values() for p in pattern.pattern.split("|")}
            self._any_substring = re.compile("|".join(sorted(everything, key=len, reverse=True)))
        for entry in exceptions:
            words = _term_words(entry)
            if words:
                self._add_phrase("!" + name, words)
        self._clear_cache()

    def _add_phrase(self, name: str, words: tuple[str, ...]) -> None:
        phrase = tuple((w, collapse(w)) for w in words)
        for key in {words[0], "~" + collapse(words[0])}:
            self._first.setdefault(key, []).append((name, phrase))

    def _clear_cache(self) -> None:
        self._cache.clear()
        self._active_words.clear()
        self._exception_words.clear()

    def set_substring_exceptions(self, words: Iterable[str]) -> None:
        self._substring_exceptions = frozenset(words)
        self._clear_cache()

    def info(self, word: str) -> WordInfo:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        exact, collapsed = forms(word)
        singles: set[str] = set()
        starts: list[tuple[str, Phrase]] = []
        keys = [*exact, *("~" + c for c in collapsed)]
        for key in keys:
            singles.update(self._single.get(key, ()))
            starts.extend(self._first.get(key, ()))
        if self._any_substring is not None:
            for form in exact:
                if form in self._substring_exceptions or not self._any_substring.search(form):
                    continue
                for name, pattern in self._substrings.items():
                    if pattern.search(form):
                        singles.add(name)
        simple = word.isalpha() and not _DOUBLE.search(word)
        unique = tuple(dict.fromkeys(starts))
        terms = tuple(s for s in unique if s[0][0] != "!")
        result = WordInfo(
            word=word,
            plain=plain(word),
            simple=simple,
            exact=exact,
            collapsed=collapsed,
            singles=frozenset(singles),
            starts=terms,
            exception_starts=tuple((name[1:], phrase) for name, phrase in unique if name[0] == "!"),
            active=bool(singles or terms),
            may_join=not simple or word in self._prefixes,
            short=len(word) <= SHORT_WORD,
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._clear_cache()
        self._cache[word] = result
        if result.active:
            self._active_words.add(word)
        if result.exception_starts:
            self._exception_words.add(word)
        return result

    def find(self, words: Sequence[str], wanted: Collection[str] = LISTS) -> set[str]:
        """The names of the ``wanted`` lists with a term in ``words`` (normalised words of one text)."""
        return self.scan(words, wanted)[0]

    def scan(self, words: Sequence[str], wanted: Collection[str] = LISTS) -> tuple[set[str], list[WordInfo]]:
        """``find``, and what was worked out about each word."""
        cache = self._cache
        infos = [cache.get(w) or self.info(w) for w in words]
        hits: list[tuple[str, int, int]] = []  # (list, start, end) of each term occurrence
        active = self._active_words.intersection(words)
        for i, info in enumerate(infos) if active else ():
            if not info.active:
                continue
            for name in info.singles:
                if name in wanted:
                    hits.append((name, i, i + 1))
            for name, phrase in info.starts:
                if name in wanted and _phrase_at(infos, i, phrase):
                    hits.append((name, i, i + len(phrase)))
        found: set[str] = set()
        if hits:
            covered = self._covered(infos, {name for name, _, _ in hits})
            for name, start, end in hits:
                cover = covered.get(name)
                if cover is None or not any(k in cover for k in range(start, end)):
                    found.add(name)
        joined_terms = self._joined
        for joined, simple in _joins(infos, self._longest):
            names = joined_terms.get(joined)
            if names:
                found.update(n for n in names if n in wanted)
            if simple:
                continue
            exact, collapsed = forms(joined)
            for key in exact:
                found.update(n for n in joined_terms.get(key, ()) if n in wanted)
            for key in collapsed:
                found.update(n for n in self._joined_collapsed.get(key, ()) if n in wanted)
        return found, infos

    def _covered(self, infos: Sequence[WordInfo], names: set[str]) -> dict[str, set[int]]:
        """Positions inside exception phrases, for the lists that had a hit."""
        covered: dict[str, set[int]] = {}
        if self._exception_words.isdisjoint(info.word for info in infos):
            return covered
        for i, info in enumerate(infos):
            for name, phrase in info.exception_starts:
                if name in names and _phrase_at(infos, i, phrase):
                    covered.setdefault(name, set()).update(range(i, i + len(phrase)))
        return covered


_DOUBLE = re.compile(r"([^\W\d_])\1")


def _alternation(words: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


def _phrase_at(infos: Sequence[WordInfo], i: int, phrase: Phrase) -> bool:
    if i + len(phrase) > len(infos):
        return False
    for k, (word, collapsed_word) in enumerate(phrase):
        info = infos[i + k]
        if word not in info.exact and collapsed_word not in info.collapsed:
            return False
    return True


def _joins(infos: Sequence[WordInfo], longest: int) -> Iterator[tuple[str, bool]]:
    """Neighbouring words read together: every pair, and every window of a run of short words.

    Yields (joined, simple): simple when the joined word needs no leetspeak or repeat reading.
    Words that cannot begin any term written together are skipped without joining.
    """
    n = len(infos)
    limit = longest + 4
    run_start = -1  # start of the current run of short words
    for i in range(n):
        a = infos[i]
        if a.short:
            if run_start < 0:
                run_start = i
        else:
            if run_start >= 0 and i - run_start >= 3:
                yield from _windows(infos, run_start, i)
            run_start = -1
        if a.may_join and i + 1 < n:
            b = infos[i + 1]
            if len(a.word) + len(b.word) <= limit:
                yield a.word + b.word, a.simple and b.simple and a.word[-1] != b.word[0]
    if run_start >= 0 and n - run_start >= 3:
        yield from _windows(infos, run_start, n)


def _windows(infos: Sequence[WordInfo], i: int, j: int) -> Iterator[tuple[str, bool]]:
    """Windows of three or more words of the short-word run infos[i:j] (pairs come separately)."""
    for start in range(i, j - 2):
        if not infos[start].may_join:
            continue
        length = len(infos[start].word) + len(infos[start + 1].word)
        for end in range(start + 3, j + 1):
            length += len(infos[end - 1].word)
            if length > LONGEST_JOIN:
                break
            yield "".join(info.word for info in infos[start:end]), False


@dataclass
class Rules:
    """A loaded, validated rule file."""

    version: str
    matcher: Matcher
    minor_emoji: tuple[str, ...]
    sexual_emoji: tuple[str, ...]
    max_minor_age: int

    @classmethod
    def from_text(cls, text: str) -> Rules:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RulesError(f"rule file is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Rules:
        if not isinstance(data, dict):
            raise RulesError("rule file must hold a JSON object")
        version = data.get("version")
        if not isinstance(version, str) or not version.strip():
            raise RulesError("rule file has no version")

        def strings(key: str, required: bool = False) -> list[str]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RulesError(f"{key} must be a list of strings")
            if required and not any(_term_words(v) for v in value):
                raise RulesError(f"{key} must not be empty")
            return value

        substring_min = data.get("substring_min_length", 0)
        max_age = data.get("max_minor_age", 17)
        if not isinstance(substring_min, int) or not isinstance(max_age, int) or not 0 < max_age < 30:
            raise RulesError("substring_min_length and max_minor_age must be small integers")
        if 0 < substring_min < 4:
            raise RulesError("substring_min_length below 4 would match inside ordinary words")
        matcher = Matcher()
        for name in LISTS:
            matcher.add(
                name,
                strings(f"{name}_terms", required=name in ("minor", "sexual")),
                strings(f"{name}_exceptions"),
                substring_min if name in ("minor", "sexual", "standalone") else 0,
            )
        matcher.set_substring_exceptions(
            plain(t) for w in strings("substring_exceptions") for t in tokens(normalize(w))
        )
        return cls(
            version=version.strip(),
            matcher=matcher,
            minor_emoji=tuple(e for e in strings("minor_emoji") if e),
            sexual_emoji=tuple(e for e in strings("sexual_emoji") if e),
            max_minor_age=max_age,
        )

    @classmethod
    def load(cls, path: Path | None) -> Rules:
        """The rule file at ``path``, or the packaged one when ``path`` is None."""
        try:
            text = packaged_rules_text() if path is None else path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"cannot read rule file: {type(exc).__name__}") from None
        return cls.from_text(text)
