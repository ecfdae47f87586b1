"""Stated ages, in each language's own grammar, from the rule files' ``ages`` sections.

A language's section gives its number words, the words that make a following small number
part of a bigger one (``twenty`` one, ``treinta y`` dos, ``二十``五), a few *anchors* (the
patterns run only on a text that contains one of them: most prompts contain none; an anchor
written ``=word`` must be a whole word, any other is looked for anywhere in the text) and its
patterns: regular expressions over normalised text (lowercase, accents stripped, digits of any
script read as 0-9, words joined by single spaces) in which ``{n}`` stands for a number
(digits or a number word) and ``{o}`` for an ordinal (digits or an ordinal word), and a space
for optional whitespace (so ``15yo`` and ``15 yo`` both match ``{n} yo``). A pattern counts
when its number is at most ``max`` (default: the rule file's ``max_minor_age``); with
``min_without_unit``, numbers below it count only when the pattern's group ``unit`` matched
(``under 16`` and ``under 5 years`` state ages, ``under 5 minutes`` does not); with
``not_after``, a number right after one of those words is a duration, not an age
(``hace 15 años``, ``depuis 15 ans``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from talos_moderation.policy.indexes import unspaced
from talos_moderation.policy.normalize import normalize, plain, tokens

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_WORD = re.compile(r"[^\W\d_]{3,}")
_DIGITS = re.compile(r"(?<![\d.,])\d{1,3}(?![\d.,]\d)")


class AgeRulesError(ValueError):
    """An ``ages`` section that cannot be used."""


def _norm(text: str) -> str:
    return " ".join(plain(t) for t in tokens(normalize(text)))


def _trie(words: list[str]) -> str:
    """One regular expression for many words, their shared beginnings merged: the engine then
    skips, at each position, every word that cannot start there."""
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_node(tree)


def _trie_node(node: dict[str, Any]) -> str:
    ends = "" in node
    branches = []
    for char in sorted(c for c in node if c):
        piece = r"\s*" if char == " " else re.escape(char)
        branches.append(piece + _trie_node(node[char]))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if ends else body


def _number(words: dict[str, int]) -> str:
    """Digits or a number word; whole-word starts are checked after matching (see ``_starts_word``),
    so the pattern begins with plain characters and the engine can skip positions fast."""
    return r"\d{1,3}(?!\d)" + ("|" + _trie(list(words)) if words else "")


def _starts_word(text: str, start: int, number: str) -> bool:
    """The number does not continue a longer number or (in scripts with spaces) a longer word."""
    if start == 0:
        return True
    before = text[start - 1]
    if number[0].isdigit():
        return not before.isdigit()
    return unspaced(number[0]) or not (before.isalnum() and not before.isdigit())


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    max_value: int
    min_without_unit: int
    # Words that, right before the number, make it a duration (``since 15 years``, ``hace 15 años``).
    not_after: frozenset[str]
    # Phrases that end in such a word without being one (Malay ``pakaian dalam``, underwear).
    not_after_exceptions: tuple[str, ...] = ()


@dataclass
class _Language:
    name: str
    values: dict[str, int]
    # Looked for anywhere in the text (glued forms, scripts without spaces).
    anchors: tuple[str, ...]
    big: tuple[str, ...]
    connectors: tuple[str, ...]
    patterns: list[_Pattern] = field(default_factory=list)
    # First words of the number words (a word may begin with one: zwölfjährig, fifteenyo), and
    # the number words of scripts without spaces: a text with none of them and no digit states
    # no age in this language.
    number_starts: tuple[str, ...] = ()
    unspaced_numbers: tuple[str, ...] = ()

    def value(self, number: str) -> int | None:
        if number.isdigit():
            return int(number)
        return self.values.get("".join(number.split()))

    def part_of_bigger(self, text: str, start: int, number: str) -> bool:
        """``twenty one``, ``treinta y dos``, ``二十五``, ``1 5``: the number continues another."""
        before = text[:start].rstrip()
        if not before:
            return False
        last = before.rsplit(" ", 1)[-1]
        if last.isdigit():
            return True
        if number.isdigit():
            return False
        for connector in self.connectors:
            if before == connector or before.endswith(" " + connector):
                before = before[: -len(connector)].rstrip()
                break
        for word in self.big:
            if before.endswith(word):
                head = before[: -len(word)]
                if not head or unspaced(word[0]) or not head[-1].isalpha():
                    return True
        return False

    def states_minor(self, text: str) -> bool:
        for pattern in self.patterns:
            for match in pattern.regex.finditer(text):
                number = match.group("n").strip()
                if not _starts_word(text, match.start("n"), number):
                    continue
                value = self.value(number)
                if value is None or value > pattern.max_value:
                    continue
                if value < pattern.min_without_unit and not match.groupdict().get("unit"):
                    continue
                before = text[: match.start("n")].rstrip()
                if (
                    pattern.not_after
                    and before.rsplit(" ", 1)[-1] in pattern.not_after
                    and not before.endswith(pattern.not_after_exceptions)
                ):
                    continue
                if not self.part_of_bigger(text, match.start("n"), number):
                    return True
        return False


def _strings(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AgeRulesError(f"ages.{key} must be a list of strings")
    return value


def _numbers(data: dict[str, Any], key: str) -> dict[str, int]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()
    ):
        raise AgeRulesError(f"ages.{key} must map words to whole numbers")
    return {_norm(k): v for k, v in value.items() if _norm(k)}


@dataclass
class AgeGrammar:
    """Every language's age patterns; ``states_minor`` is true when any of them finds a minor."""

    max_minor_age: int = 17
    languages: list[_Language] = field(default_factory=list)
    # Whole-word anchors -> the languages whose patterns they call for.
    word_anchors: dict[str, set[str]] = field(default_factory=dict)
    # Anchors looked for anywhere -> the languages they call for.
    text_anchors: dict[str, set[str]] = field(default_factory=dict)
    # Number words -> their languages, and one expression finding them (built on first use).
    _number_words: dict[str, set[str]] = field(default_factory=dict)
    _unspaced_number_words: dict[str, set[str]] = field(default_factory=dict)
    _number_finder: re.Pattern[str] | None = None

    def add(self, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise AgeRulesError(f"{name}: ages must be an object")
        numbers = _numbers(data, "numbers")
        ordinals = _numbers(data, "ordinals")
        cardinal, ordinal = _number(numbers), _number(ordinals)
        anchors = _strings(data, "anchors")
        for word in (_norm(a[1:]) for a in anchors if a.startswith("=")):
            if word:
                self.word_anchors.setdefault(word, set()).add(name)
        words = [*numbers, *ordinals]
        language = _Language(
            name=name,
            number_starts=tuple(sorted({w.split()[0] for w in words if not unspaced(w)})),
            unspaced_numbers=tuple(sorted({w.replace(" ", "") for w in words if unspaced(w)}, key=len)),
            values={k.replace(" ", ""): v for k, v in {**ordinals, **numbers}.items()},
            anchors=tuple(a for a in (_norm(x) for x in anchors if not x.startswith("=")) if a),
            big=tuple(
                sorted((b for b in (_norm(x) for x in _strings(data, "big")) if b), key=len, reverse=True)
            ),
            connectors=tuple(c for c in (_norm(x) for x in _strings(data, "connectors")) if c),
        )
        raw = data.get("patterns", [])
        if not isinstance(raw, list) or (raw and not anchors):
            raise AgeRulesError(f"{name}: ages.patterns must be a list, and patterns need anchors")
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("re"), str):
                raise AgeRulesError(f"{name}: each age pattern needs a 're' string")
            max_value = item.get("max", self.max_minor_age)
            floor = item.get("min_without_unit", 0)
            if not isinstance(max_value, int) or not isinstance(floor, int):
                raise AgeRulesError(f"{name}: 'max' and 'min_without_unit' must be whole numbers")
            # Letters in a pattern are read like prompts (Arabic yeh, accents); ASCII is regex syntax.
            source = _NON_ASCII.sub(lambda m: normalize(m.group()), item["re"]).replace(" ", r"\s*")
            source = source.replace("{n}", f"(?P<n>{cardinal})").replace("{o}", f"(?P<n>{ordinal})")
            try:
                regex = re.compile(source)
            except re.error as exc:
                raise AgeRulesError(f"{name}: age pattern does not compile: {exc}") from None
            if "n" not in regex.groupindex:
                raise AgeRulesError(f"{name}: age pattern without {{n}} or {{o}}")
            not_after = item.get("not_after", [])
            exceptions = item.get("not_after_exceptions", [])
            for key, value in (("not_after", not_after), ("not_after_exceptions", exceptions)):
                if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
                    raise AgeRulesError(f"{name}: '{key}' must be a list of words")
            language.patterns.append(
                _Pattern(
                    regex,
                    max_value,
                    floor,
                    frozenset(_norm(w) for w in not_after),
                    tuple(_norm(phrase) for phrase in exceptions),
                )
            )
        if language.patterns:
            self.languages.append(language)
            for anchor in language.anchors:
                self.text_anchors.setdefault(anchor, set()).add(name)
            self._number_finder = None

    def states_minor(self, text: str) -> bool:
        """True when ``text`` (normalised words joined by spaces) states an age under the limit."""
        return bool(self.minor_languages(text, first=True))

    def minor_languages(self, text: str, *, first: bool = False) -> set[str]:
        """The languages in whose grammar ``text`` states an age under the limit (with ``first``,
        only the first one found)."""
        words = set(text.split())
        called = {lang for word in words for lang in self.word_anchors.get(word, ())}
        called |= self._text_anchor_languages(text)
        numbered = self._number_languages(text)
        # Only a number an age can be counts as one (35mm, 2048 and 1.8 state none).
        digits = any(int(run) <= 2 * self.max_minor_age for run in _DIGITS.findall(text))
        found: set[str] = set()
        for lang in self.languages:
            if lang.name in called and (digits or lang.name in numbered) and lang.states_minor(text):
                found.add(lang.name)
                if first:
                    break
        return found

    def _number_languages(self, text: str) -> set[str]:
        """Languages with a number word in ``text``: a word beginning with one (found in one pass
        over the word starts), or one of a script without spaces anywhere. A cheap first cut
        before each language's own check."""
        if self._number_finder is None:
            spaced: dict[str, set[str]] = {}
            unspaced_words: dict[str, set[str]] = {}
            for lang in self.languages:
                for word in lang.number_starts:
                    spaced.setdefault(word, set()).add(lang.name)
                for word in lang.unspaced_numbers:
                    unspaced_words.setdefault(word, set()).add(lang.name)
            self._number_words = spaced
            self._unspaced_number_words = unspaced_words
            self._number_finder = (
                re.compile(f"(?<!\\S)({_trie(sorted(spaced))})") if spaced else re.compile("(?!)")
            )
        out: set[str] = set()
        for found in self._number_finder.findall(text):
            out |= self._number_words[found]
        for word, langs in self._unspaced_number_words.items():
            if word in text:
                out |= langs
        return out

    def _text_anchor_languages(self, text: str) -> set[str]:
        """Languages with an anchor anywhere in ``text``: each distinct anchor looked for once."""
        out: set[str] = set()
        for anchor, langs in self.text_anchors.items():
            if anchor in text:
                out |= langs
        return out

    def vocabulary(self) -> set[str]:
        """The words of every language's age grammar (number words, ordinals, anchors and the
        words spelled out in its patterns), for readings of words with a hidden letter."""
        words: set[str] = set(self.word_anchors) | set(self.text_anchors)
        for language in self.languages:
            words.update(w for key in language.values for w in key.split())
            for pattern in language.patterns:
                source = re.sub(r"\\[a-zA-Z]|\(\?P?<\w+>|\{\d*,?\d*\}", " ", pattern.regex.pattern)
                words.update(_WORD.findall(source))
        return {w for w in words if len(w) >= 3}
