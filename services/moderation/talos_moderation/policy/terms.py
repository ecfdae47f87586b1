"""The term index: every term list of every language, built once from the rule files.

:class:`TermIndex` holds what the rules declare (one-word terms by key, phrases by their
first word, terms written together, long and unspaced terms for substring search, affixes,
transliterations, masks, exceptions); :class:`talos_moderation.policy.matcher.Matcher` reads a
text's words against it. See the matcher's docstring for how a term word is spelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from talos_moderation.policy.indexes import AffixIndex, MaskIndex, SubstringIndex, unspaced
from talos_moderation.policy.normalize import collapse, normalize, plain, tokens
from talos_moderation.policy.translit import TranslitIndex

# Neighbouring words of at most this many letters are also read joined up ("c h i l d").
SHORT_WORD = 3
LONGEST_JOIN = 16
CACHE_LIMIT = 50_000
# A word written ``word=`` is also found in neighbouring words joined (``chu er``, ``wei
# chengnian``: romanised syllables are spaced as the writer likes) from this many letters on.
JOINED_EXACT = 7

Phrase = tuple[frozenset[str], ...]  # for each word, the keys it answers to


def entry_words(entry: str) -> list[tuple[str, str]]:
    """(word, marker) of a rule entry, normalised like prompts; marker is ``""``, ``+``, ``*`` or
    ``=`` (the word exactly, without the language's affixes: Romanian ``gol=`` is not ``gola``)."""
    out: list[tuple[str, str]] = []
    for piece in entry.split():
        marker = piece[-1] if piece[-1] in "+*=" and len(piece) > 1 else ""
        words = [plain(t) for t in tokens(normalize(piece[:-1] if marker else piece))]
        words = [w for w in words if w]
        out.extend((w, "") for w in words[:-1])
        if words:
            out.append((words[-1], marker))
    return out


@dataclass(frozen=True, slots=True)
class WordInfo:
    """Everything the matcher needs about one word, worked out once per distinct word."""

    word: str
    plain: str
    # The word has one reading only: joins with it need no further reading.
    simple: bool
    keys: frozenset[str]
    # Lists with a one-word term here (whole word, with affixes, or inside the word).
    singles: frozenset[str]
    # (list, phrase) of terms of two words or more that may start here.
    starts: tuple[tuple[str, Phrase], ...]
    # The same, by each key their second word answers to: the next word picks the few to try.
    starts_next: dict[str, tuple[tuple[str, Phrase], ...]]
    # (list, phrase) of exception phrases that may start here.
    exception_starts: tuple[tuple[str, Phrase], ...]
    # Whether a term may start here at all (most words: no).
    active: bool
    # The word can begin a term written together with its neighbours.
    may_join: bool
    # Short enough to be part of a spaced-out word ("c h i l d", "chi ld").
    short: bool


def base_list(name: str) -> str:
    """``minor~es`` (a weak term of one language) belongs to ``minor``."""
    return name.split("~", 1)[0]


@dataclass
class TermIndex:
    """Every term list, indexed together so a text's words are scanned once."""

    substring_min: int = 0
    # Lists whose long terms are also found inside longer words.
    substring_lists: frozenset[str] = frozenset()
    # Key -> lists with a one-word term answering to it.
    _single: dict[str, set[str]] = field(default_factory=dict)
    # Key of a first word -> (list, phrase) of terms of two words or more.
    _first: dict[str, list[tuple[str, Phrase]]] = field(default_factory=dict)
    # Terms written together ("little girl" -> "littlegirl") -> list names.
    _joined: dict[str, set[str]] = field(default_factory=dict)
    _joined_collapsed: dict[str, set[str]] = field(default_factory=dict)
    _long: SubstringIndex = field(default_factory=SubstringIndex)
    _unspaced: SubstringIndex = field(default_factory=SubstringIndex)
    _unspaced_exceptions: SubstringIndex = field(default_factory=SubstringIndex)
    _affixes: AffixIndex = field(default_factory=AffixIndex)
    _translit: TranslitIndex = field(default_factory=TranslitIndex)
    _masks: MaskIndex = field(default_factory=MaskIndex)
    # The words of terms of two words or more, for a hidden letter inside a phrase (ropa i*terior).
    _phrase_masks: MaskIndex = field(default_factory=MaskIndex)
    # Stems of ``stem*`` terms, probed by length.
    _prefix_lengths: list[int] = field(default_factory=list)
    _prefix_stems: set[str] = field(default_factory=set)
    _word_exceptions: frozenset[str] = frozenset()
    _prefix_exceptions: tuple[str, ...] = ()
    _longest: int = 0
    # Every beginning of a term written together (and of its collapsed form).
    _prefixes: set[str] = field(default_factory=set)
    _cache: dict[str, WordInfo] = field(default_factory=dict)
    # Terms whose words may stand anywhere in the text: (list, the names of its words' hits).
    _groups: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    # Lists never read from words joined together (evidence of a language: "a n" is no "an").
    unjoined: frozenset[str] = frozenset()
    # The lists with exception phrases: only their hits are checked against them.
    _excepted_lists: set[str] = field(default_factory=set)
    # The cached words at which a term (an exception phrase) may start.
    _active_words: set[str] = field(default_factory=set)
    _exception_words: set[str] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)

    def add_language(self, lang: str, prefixes: Iterable[str], suffixes: Iterable[str]) -> None:
        """Declares a language whose terms take these prefixes and suffixes."""
        self._affixes.add_language(lang, prefixes, suffixes)

    def add_romanization(self, lang: str) -> None:
        """Declares a language whose terms are also found transliterated (see :mod:`translit`);
        its suffixes must be declared first."""
        self._translit.add_language(lang, self._affixes.endings.get(lang, []))

    def _word_keys(self, word: str, marker: str, lang: str, *, in_phrase: bool = False) -> frozenset[str]:
        keys: set[str] = set()
        if self._translit.has(lang):
            keys = self._translit.word_keys(word, marker, lang, in_phrase=in_phrase)
        if marker == "+":
            if not self._affixes.has(lang):
                raise ValueError(f"'{word}+' needs a language with suffixes")
            self._affixes.vocab[lang].add(word)
            keys.add(f"{lang}:{word}+")
        elif marker == "*":
            self._prefix_stems.add(word)
            self._prefix_lengths = sorted({*self._prefix_lengths, len(word)})
            keys.add(word + "*")
        elif marker == "=":
            keys.add(word)
        else:
            keys.update((word, "~" + collapse(word)))
            if self._affixes.has(lang):
                self._affixes.vocab[lang].add(word)
                keys.add(f"{lang}:{word}")
        return frozenset(keys)

    def add(self, name: str, entries: Iterable[str], exceptions: Iterable[str] = (), lang: str = "") -> None:
        count = 0
        for entry in entries:
            words = entry_words(entry)
            if not words:
                continue
            count += 1
            phrase = tuple(self._word_keys(w, m, lang, in_phrase=len(words) > 1) for w, m in words)
            joined = "".join(w for w, _ in words)
            if len(words) == 1:
                for key in phrase[0]:
                    self._single.setdefault(key, set()).add(name)
                # Words a masked spelling may stand for: the term, or each ending of a stem.
                endings = self._affixes.endings.get(lang, []) if words[0][1] == "+" else [""]
                for ending in endings:
                    self._masks.add(joined + ending)
            else:
                self._add_phrase(name, phrase)
                for word, marker in words:
                    endings = self._affixes.endings.get(lang, []) if marker == "+" else [""]
                    for ending in endings if marker != "*" else ():
                        self._phrase_masks.add(word + ending)
            if len(words) == 1 and words[0][1] == "=" and len(joined) >= JOINED_EXACT:
                self._add_joined(joined, name, collapsed=False)
                continue
            if any(m for _, m in words):
                continue
            if unspaced(joined):
                self._unspaced.add(joined, name)
                continue
            self._add_joined(joined, name, collapsed=True)
            if self.substring_min and len(joined) >= self.substring_min and name in self.substring_lists:
                self._long.add(joined, name)
        self.sizes[name] = self.sizes.get(name, 0) + count
        for entry in exceptions:
            words = entry_words(entry)
            if not words:
                continue
            joined = "".join(w for w, _ in words)
            if unspaced(joined):
                self._unspaced_exceptions.add(joined, name)
            self._add_phrase("!" + name, tuple(self._word_keys(w, m, lang) for w, m in words))
            self._excepted_lists.add(name)
        self._clear_cache()

    def _add_joined(self, joined: str, name: str, *, collapsed: bool) -> None:
        """A term also read from neighbouring words joined (``c h i l d``, ``chi ld``)."""
        self._joined.setdefault(joined, set()).add(name)
        forms_ = [joined]
        if collapsed:
            self._joined_collapsed.setdefault(collapse(joined), set()).add(name)
            forms_.append(collapse(joined))
        for form in forms_:
            self._prefixes.update(form[:k] for k in range(1, len(form) + 1))
        self._longest = max(self._longest, len(joined))

    def add_together(self, name: str, entries: Iterable[str], lang: str = "") -> None:
        """Terms of two words or more that count when every word is in the text, in any order and
        at any distance (``believes ... Santa``): word order is free in many languages, and a
        paraphrase rarely keeps the words side by side. Each word is a one-word term of its own
        (with the language's affixes, ``stem+`` and ``stem*``) under the name ``list&group.word``;
        a word written ``a|b|c`` is any of them (``cree|creen ratoncito|reyes``)."""
        for entry in entries:
            pieces = entry.split()
            if len(pieces) < 2:
                raise ValueError(f"'{entry}': a together term needs two words or more")
            group = f"{name}&{len(self._groups)}"
            parts = tuple(f"{group}.{k}" for k in range(len(pieces)))
            for part, piece in zip(parts, pieces, strict=True):
                for alternative in piece.split("|"):
                    words = entry_words(alternative)
                    if len(words) != 1:
                        raise ValueError(f"'{entry}': each word of a together term is one word")
                    word, marker = words[0]
                    if not marker:
                        self._phrase_masks.add(word)
                    for key in self._word_keys(word, marker, lang):
                        self._single.setdefault(key, set()).add(part)
                    if not marker and unspaced(word):
                        self._unspaced.add(word, part)
            self._groups.append((name, parts))
            self.sizes[name] = self.sizes.get(name, 0) + 1
        self._clear_cache()

    @property
    def together_parts(self) -> frozenset[str]:
        """The names under which the words of together terms are found."""
        return frozenset(part for _, parts in self._groups for part in parts)

    def complete(self, found: set[str]) -> set[str]:
        """``found`` with the list of every together term whose words were all found, and without
        the names of those words."""
        if not any("&" in name for name in found):
            return found
        out = {name for name in found if "&" not in name}
        parts = found - out
        for name, group in self._groups:
            if group[0] in parts and parts.issuperset(group):
                out.add(name)
        return out

    def _add_phrase(self, name: str, phrase: Phrase) -> None:
        for key in phrase[0]:
            self._first.setdefault(key, []).append((name, phrase))

    def _clear_cache(self) -> None:
        self._cache.clear()
        self._active_words.clear()
        self._exception_words.clear()

    def set_substring_exceptions(self, words: Iterable[str]) -> None:
        """Words inside which a long or ``stem*`` term does not count (``infantry``); an entry
        ending in ``*`` covers every word that begins with it."""
        whole: set[str] = set()
        starts: set[str] = set()
        for entry in words:
            for word, marker in entry_words(entry):
                (starts if marker == "*" else whole).add(word)
        self._word_exceptions = frozenset(whole)
        self._prefix_exceptions = tuple(sorted(starts))
        self._clear_cache()

    def _excepted(self, form: str) -> bool:
        return form in self._word_exceptions or form.startswith(self._prefix_exceptions or ("\0",))
