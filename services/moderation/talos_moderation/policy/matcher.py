"""The word matcher: every term list of every language, indexed so a text is scanned once.

A term is a word or a phrase. Each word of a text is worked out once (and cached): its
readings (see :func:`normalize.forms`), the *keys* it answers to, and which terms start at it.
Keys are the readings themselves, ``~`` + a reading with repeats collapsed, ``lang:stem`` and
``lang:stem+`` for a reading as a language's prefix + stem + suffix, and ``stem*`` for a word
that begins with a prefix term. A term word answers to the keys its spelling asks for:

=============  ===============================================================
``word``       the word, with repeats collapsed, and (in a language with affixes)
               with that language's prefixes and suffixes
``stem+``      the stem followed by one of the language's suffixes
``stem*``      any word that begins with the stem
``word=``      the word exactly: no affixes, no repeats collapsed, not inside others
=============  ===============================================================
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence

from talos_moderation.policy.indexes import unspaced
from talos_moderation.policy.normalize import forms, mask_readings, plain
from talos_moderation.policy.terms import (
    CACHE_LIMIT,
    LONGEST_JOIN,
    SHORT_WORD,
    Phrase,
    TermIndex,
    WordInfo,
    base_list,
    entry_words,
)

__all__ = ["Matcher", "WordInfo", "base_list", "entry_words"]


class Matcher(TermIndex):
    """Reads a text's words against the term index, each word worked out once and cached."""

    def keys(self, exact: Iterable[str], collapsed: Iterable[str]) -> set[str]:
        keys = set(exact)
        keys.update("~" + c for c in collapsed)
        for form in exact:
            keys.update(self._affixes.keys(form))
            if form.isascii():
                keys.update(self._translit.keys(form))
            for size in self._prefix_lengths:
                if size > len(form):
                    break
                if form[:size] in self._prefix_stems and not self._excepted(form):
                    keys.add(form[:size] + "*")
        return keys

    def _inside(self, form: str) -> set[str]:
        """Lists with a term inside ``form``: long terms, and terms of unspaced scripts."""
        found: set[str] = set()
        if len(form) >= self.substring_min and not self._excepted(form):
            for _, _, names in self._long.hits(form):
                found.update(names)
        if unspaced(form):
            covered: dict[str, set[int]] = {}
            for start, end, names in self._unspaced_exceptions.hits(form):
                for name in names:
                    covered.setdefault(name, set()).update(range(start, end))
            for start, end, names in self._unspaced.hits(form):
                for name in names:
                    cover = covered.get(base_list(name))
                    if cover is None or not cover.issuperset(range(start, end)):
                        found.add(name)
        return found

    def info(self, word: str) -> WordInfo:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        exact, collapsed = forms(word)
        keys = self.keys(exact, collapsed)
        singles: set[str] = set()
        starts: list[tuple[str, Phrase]] = []
        for key in keys:
            singles.update(self._single.get(key, ()))
            starts.extend(self._first.get(key, ()))
        for form in exact:
            singles.update(self._inside(form))
        unique = tuple(dict.fromkeys(starts))
        terms = tuple(s for s in unique if s[0][0] != "!")
        simple = len(exact) == 1 and not collapsed and word in exact
        result = WordInfo(
            word=word,
            plain=plain(word),
            simple=simple,
            keys=frozenset(keys),
            singles=frozenset(singles),
            starts=terms,
            starts_next=_by_second_word(terms),
            exception_starts=tuple((name[1:], phrase) for name, phrase in unique if name[0] == "!"),
            active=bool(singles or terms),
            may_join=not simple or word in self._prefixes,
            short=len(word) <= SHORT_WORD,
        )
        if len(self._cache) >= CACHE_LIMIT:
            self._clear_cache()
        self._cache[word] = result
        if result.active:
            self._active_words.add(word)
        if result.exception_starts:
            self._exception_words.add(word)
        return result

    def find(self, words: Sequence[str], wanted: Collection[str]) -> set[str]:
        """The names of the ``wanted`` lists with a term in ``words`` (normalised words of one text)."""
        return self.scan(words, wanted)[0]

    def scan(self, words: Sequence[str], wanted: Collection[str]) -> tuple[set[str], list[WordInfo]]:
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
            if info.starts_next and i + 1 < len(infos):
                candidates = [c for key in infos[i + 1].keys for c in info.starts_next.get(key, ())]
                for name, phrase in dict.fromkeys(candidates):
                    if name in wanted and _phrase_at(infos, i, phrase):
                        hits.append((name, i, i + len(phrase)))
        joined_terms = self._joined
        for joined, simple, start, end in _joins(infos, self._longest):
            names = set(joined_terms.get(joined, ()))
            if not simple:
                exact, collapsed = forms(joined)
                for key in exact:
                    names.update(joined_terms.get(key, ()))
                for key in collapsed:
                    names.update(self._joined_collapsed.get(key, ()))
            hits.extend(
                (name, start, end)
                for name in names
                if name in wanted and base_list(name) not in self.unjoined
            )
        found: set[str] = set()
        checked: list[tuple[str, int, int]] = []
        for hit in hits:
            if base_list(hit[0]) in self._excepted_lists:
                checked.append(hit)
            else:
                found.add(hit[0])
        if checked:
            # Exception phrases cover joined readings too: Romanian "nu e" is not French "nue".
            covered = self._covered(infos, {base_list(name) for name, _, _ in checked})
            for name, start, end in checked:
                cover = covered.get(base_list(name))
                if cover is None or not any(k in cover for k in range(start, end)):
                    found.add(name)
        return found, infos

    def find_masked(self, words: Iterable[str], wanted: Collection[str]) -> set[str]:
        """Lists with a term that a masked word (``n*ked``) can stand for, or that it spells
        with the masks dropped (``c*h*i*l*d``)."""
        found: set[str] = set()
        for word in words:
            for pattern in mask_readings(word):
                for term in self._masks.matches(pattern):
                    found.update(n for n in self.info(term).singles if n in wanted)
                found.update(n for n in self.info(pattern.replace("?", "")).singles if n in wanted)
        return found

    def mask_words(self) -> tuple[set[str], set[str]]:
        """(every word of the terms, with each ending of a stem; the stems of ``stem*`` terms),
        for readings of words with a hidden letter (see :mod:`masks`)."""
        words = {
            w
            for index in (self._masks, self._phrase_masks)
            for group in index.by_length.values()
            for w in group
        }
        return words, set(self._prefix_stems)

    def affix_bases(self) -> set[str]:
        """The words and stems of the languages with endings: a masked word may be one of them
        with an ending (``enfa#ts``)."""
        return {w for words in self._affixes.vocab.values() for w in words}

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


def _by_second_word(terms: tuple[tuple[str, Phrase], ...]) -> dict[str, tuple[tuple[str, Phrase], ...]]:
    index: dict[str, list[tuple[str, Phrase]]] = {}
    for term in terms:
        for key in term[1][1]:
            index.setdefault(key, []).append(term)
    return {key: tuple(items) for key, items in index.items()}


def _phrase_at(infos: Sequence[WordInfo], i: int, phrase: Phrase) -> bool:
    """Whether the phrase's words follow from position i (its first word is known to match)."""
    if i + len(phrase) > len(infos):
        return False
    for k in range(1, len(phrase)):
        if phrase[k].isdisjoint(infos[i + k].keys):
            return False
    return phrase[0].isdisjoint(infos[i].keys) is False


def _joins(infos: Sequence[WordInfo], longest: int) -> Iterator[tuple[str, bool, int, int]]:
    """Neighbouring words read together: every pair, and every window of a run of short words.

    Yields (joined, simple, start, end): simple when the joined word needs no leetspeak or
    repeat reading; start and end are the positions of the words joined.
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
                yield a.word + b.word, a.simple and b.simple and a.word[-1] != b.word[0], i, i + 2
    if run_start >= 0 and n - run_start >= 3:
        yield from _windows(infos, run_start, n)


def _windows(infos: Sequence[WordInfo], i: int, j: int) -> Iterator[tuple[str, bool, int, int]]:
    """Windows of three or more words of the short-word run infos[i:j] (pairs come separately)."""
    for start in range(i, j - 2):
        if not infos[start].may_join:
            continue
        length = len(infos[start].word) + len(infos[start + 1].word)
        for end in range(start + 3, j + 1):
            length += len(infos[end - 1].word)
            if length > LONGEST_JOIN:
                break
            yield "".join(info.word for info in infos[start:end]), False, start, end
