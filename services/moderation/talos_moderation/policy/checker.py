"""The hard limit: a minor context together with a sexual context blocks the prompt.

Positive texts (the prompt as written and as the style preset expanded it) give a minor
context through minor terms, numeric ages under 18 and child emoji, and a sexual context
through sexual or nudity terms. A negative prompt steers *away* from what it names, so its
minor and sexual terms never count; but steering away from adulthood ("adult", "mature",
"old") pushes towards a minor, and steering away from clothing ("clothes", "dressed") pushes
towards nudity, so those count as the minor and the sexual context respectively.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from talos_moderation.policy.normalize import collapse3, leet_text, masked_words, normalize, plain, tokens
from talos_moderation.policy.respacing import lookalike_views, respaced
from talos_moderation.policy.rules import EVIDENCE, Rules, RulesError

MINOR_SEXUAL = "minor_sexual"
POLICY_UNAVAILABLE = "policy_unavailable"
PROMPT_TOO_LONG = "prompt_too_long"
NONE = "none"
UNAVAILABLE_VERSION = "unavailable"
MEMO_LIMIT = 16_384
# An age stated in at most this many languages' grammar shows each of them (see below).
AGE_LANGUAGES_SHOWN = 3
# Words either side of a masked word read again with its fillings: phrases and ages are short.
MASK_CONTEXT = 4


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    category: str
    policy_version: str


@dataclass(frozen=True)
class Contexts:
    """What one text contributes; never which term it was."""

    minor: bool = False
    sexual: bool = False
    standalone: bool = False


class PromptPolicy:
    """Checks prompts against a rule file; blocks everything when the rules did not load."""

    def __init__(self, rules: Rules | None, error: str | None = None, max_chars: int = 20_000) -> None:
        self.rules = rules
        self.error = error
        self.max_chars = max_chars
        # Contexts of recently seen texts (preset negatives repeat on every request), keyed by a
        # digest so the cache holds no prompt text.
        self._memo: dict[bytes, Contexts] = {}

    @classmethod
    def load(cls, path: Path | None, max_chars: int = 20_000) -> PromptPolicy:
        """Loads the rules; on any failure the policy fails closed instead of raising."""
        try:
            return cls(Rules.load(path), max_chars=max_chars)
        except RulesError as exc:
            return cls(None, error=str(exc), max_chars=max_chars)
        except Exception as exc:
            return cls(None, error=f"rule file failed to load: {type(exc).__name__}", max_chars=max_chars)

    @property
    def available(self) -> bool:
        return self.rules is not None

    @property
    def version(self) -> str:
        return self.rules.version if self.rules is not None else UNAVAILABLE_VERSION

    def check(
        self,
        prompt: str,
        negative_prompt: str = "",
        final_prompt: str = "",
        final_negative_prompt: str = "",
    ) -> Verdict:
        rules = self.rules
        if rules is None:
            return Verdict(True, POLICY_UNAVAILABLE, UNAVAILABLE_VERSION)
        texts = (prompt, negative_prompt, final_prompt, final_negative_prompt)
        if sum(len(t) for t in texts) > self.max_chars:
            return Verdict(True, PROMPT_TOO_LONG, rules.version)
        minor = sexual = False
        for text in _distinct(prompt, final_prompt):
            ctx = self._contexts(rules, text, positive=True)
            if ctx.standalone:
                return Verdict(True, MINOR_SEXUAL, rules.version)
            minor = minor or ctx.minor
            sexual = sexual or ctx.sexual
            if minor and sexual:
                return Verdict(True, MINOR_SEXUAL, rules.version)
        for text in _distinct(negative_prompt, final_negative_prompt):
            ctx = self._contexts(rules, text, positive=False)
            minor = minor or ctx.minor
            sexual = sexual or ctx.sexual
        if minor and sexual:
            return Verdict(True, MINOR_SEXUAL, rules.version)
        return Verdict(False, NONE, rules.version)

    def _contexts(self, rules: Rules, text: str, *, positive: bool) -> Contexts:
        key = hashlib.blake2b(
            text.encode("utf-8", "surrogatepass"), digest_size=16, person=b"+" if positive else b"-"
        ).digest()
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        ctx = positive_contexts(rules, text) if positive else negative_contexts(rules, text)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = ctx
        return ctx


def _distinct(first: str, second: str) -> list[str]:
    texts = [t for t in (first, second) if t and not t.isspace()]
    if len(texts) == 2 and texts[0] == texts[1]:
        texts.pop()
    return texts


def _lists(
    rules: Rules, text: str, wanted: frozenset[str]
) -> tuple[set[str], list[list[str]], list[list[str]]]:
    """The lists found in one text, before weak terms are resolved (see :meth:`Rules.resolve`);
    its word divisions (the words as written, then any with letter-spaced runs joined) and
    their plain forms."""
    normalised = normalize(text)
    words = tokens(normalised)
    found, infos = rules.matcher.scan(words, wanted)
    masked = masked_words(normalised)
    divisions, plains = [words], [[i.plain for i in infos]]
    for word in masked:
        whole = rules.matcher.find_masked([word], wanted)
        found |= whole
        if any("~" not in name and "&" not in name for name in whole):
            continue  # the word stands for a whole term already
        # A hidden letter in a phrase's word, a stem or an age: the words around it read again
        # with each word it may be.
        written = word if word in normalised else word.replace("*", "@")
        at = normalised.find(written)
        if at < 0:
            continue
        before = tokens(normalised[:at])[-MASK_CONTEXT:]
        after = tokens(normalised[at + len(written) :])[:MASK_CONTEXT]
        for filling in rules.masks.fillings(word):
            variant = [*before, *tokens(filling), *after]
            variant_found, variant_infos = rules.matcher.scan(variant, wanted)
            found |= variant_found
            divisions.append(variant)
            plains.append([i.plain for i in variant_infos])
    for variant in respaced(words, normalised):
        variant_found, variant_infos = rules.matcher.scan(variant, wanted)
        found |= variant_found
        divisions.append(variant)
        plains.append([i.plain for i in variant_infos])
    found = rules.matcher.complete(found)
    if any("~" in name for name in found):  # a weak term: does the text show its language?
        found |= rules.shown(text)
    return found, divisions, plains


def positive_contexts(rules: Rules, text: str) -> Contexts:
    raw, divisions, plains = _lists(rules, text, rules.positive_lists)
    found = rules.resolve(raw)
    minor = "minor" in found or any(e in text for e in rules.minor_emoji)
    sexual = "sexual" in found or any(e in text for e in rules.sexual_emoji)
    if not minor:
        # Which language's grammar stated the age matters only to a pending weak sexual term.
        every = not sexual and any(name.startswith("sexual~") for name in raw)
        languages: set[str] = set()
        for words, plain_words in zip(divisions, plains, strict=True):
            languages |= _minor_age_languages(rules, words, plain_words, first=not every)
            if languages and not every:
                break
        minor = bool(languages)
        if 0 < len(languages) <= AGE_LANGUAGES_SHOWN and every:
            # An age in one language's own grammar shows that language, for its weak terms; an
            # age written alike in a few neighbouring languages (``9-letni``: Polish, Czech,
            # Russian typed in Latin letters) shows each of them, one read alike by many none.
            found = rules.resolve(raw | {f"{EVIDENCE}~{lang}" for lang in languages})
            sexual = "sexual" in found
    return Contexts(minor=minor, sexual=sexual, standalone="standalone" in found)


def negative_contexts(rules: Rules, text: str) -> Contexts:
    found = rules.resolve(_lists(rules, text, rules.negative_lists)[0])
    return Contexts(minor="negative_adulthood" in found, sexual="negative_clothing" in found)


_TRIPLE = re.compile(r"([^\W\d_])\1\1")


_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")


def _minor_age_languages(rules: Rules, words: list[str], plains: list[str], *, first: bool) -> set[str]:
    """The languages in whose grammar the words state a minor's age (none: no such age; with
    ``first``, at most one)."""
    # 15yo and 15años are read as 15 yo and 15 años, so whole-word anchors find their units.
    base = " ".join(plains)
    if any(c.isdigit() for c in base):
        base = _DIGIT_LETTER.sub(" ", base)
    views = [base]
    if any(_LEET_INSIDE.search(w) for w in words):
        views.append(leet_text(words))
        views.append(_DIGIT_LETTER.sub(" ", leet_text(words, keep_numbers=True)))
    if _TRIPLE.search(base):
        views.append(collapse3(base, 2))
        views.append(collapse3(base, 1))
    if _single_run(words):
        views.append(_spaced_joined(words))
    if not base.isascii():
        views += lookalike_views(plains)
    languages: set[str] = set()
    for view in dict.fromkeys(views):
        languages |= rules.ages.minor_languages(view, first=first)
        if languages and first:
            break
    return languages


# Leetspeak in a word: a digit after a letter (t33n, 14enn3), digits before three letters or
# more (4nak, 74hun), or a symbol. A number with a short unit (35mm, 8k, 3d) reads well as it is.
_LEET_INSIDE = re.compile(r"[^\W\d_][0-9]|^[0-9]+[^\W\d_]{3}|[@$!|+€£]")


def _single_run(words: list[str]) -> bool:
    return any(len(a) == 1 and len(b) == 1 for a, b in itertools.pairwise(words))


def _spaced_joined(words: list[str]) -> str:
    """Single characters run together again: ``1 5 y o`` -> ``15yo``."""
    out: list[str] = []
    run: list[str] = []
    for w in words:
        p = plain(w)
        if len(p) == 1:
            run.append(p)
            continue
        if run:
            out.append("".join(run))
            run = []
        out.append(p)
    if run:
        out.append("".join(run))
    return " ".join(out)


__all__ = ["MINOR_SEXUAL", "NONE", "POLICY_UNAVAILABLE", "PromptPolicy", "RulesError", "Verdict"]
