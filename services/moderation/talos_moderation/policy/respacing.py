"""Other word divisions of a text: letter-spaced words put back together, and look-alike ages.

The matcher already reads every pair of neighbouring words joined and every window of a run of
short words, which finds a spaced-out *term* (``c h i l d``). A spaced-out word inside a longer
phrase, or one that needs an ending or a clitic (``k l e i n e s Mädchen``, ``uten k l æ r``,
``p ă p u ș i``), is only found when the run is read as one word in the sentence again: that is
what :func:`respaced` gives. A run often starts or ends with a real one-letter word (Swedish
``i``, Spanish ``y``, Russian ``в``), so the run is also read without its first or last word.

Scripts written without spaces (Chinese, Japanese, Thai) hide a term by spacing it out just the
same (``小 学 六 年 级``): :func:`respaced` also gives the text with the spaces between two of
their characters removed.
"""

from __future__ import annotations

import re

from talos_moderation.policy.normalize import tokens
from talos_moderation.policy.skeleton import readings, script

# A run of at least this many one-character words is read as a spaced-out word.
MIN_RUN = 3
# The blocks of the scripts written without spaces (kana, CJK ideographs, Thai, Lao, Khmer,
# Myanmar), and the spaces between two of their characters.
_UNSPACED_CHARS = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
)
_GAP = re.compile(rf"(?<=[{_UNSPACED_CHARS}])\s+(?=[{_UNSPACED_CHARS}])")
_SHIFTS = ((0, 0), (1, 0), (0, -1), (1, -1), (-1, 0), (0, 1))


def _runs(words: list[str]) -> list[tuple[int, int]]:
    """(start, end) of every run of one-character words long enough to be a spaced-out word: three,
    or two of another script than Latin (a vowel sign keeps the rest of a Bengali word whole)."""
    runs: list[tuple[int, int]] = []
    i, n = 0, len(words)
    while i < n:
        if len(words[i]) != 1:
            i += 1
            continue
        j = i
        while j < n and len(words[j]) == 1:
            j += 1
        if j - i >= MIN_RUN or (j - i == 2 and not words[i].isascii()):
            runs.append((i, j))
        i = j
    return runs


def respaced(words: list[str], normalised: str) -> list[list[str]]:
    """Word lists of the same text with its letter-spaced runs joined, each run whole and without
    a one-letter word at either end; and, for scripts without spaces, the spaces between their
    characters removed. Empty for the usual text."""
    out: list[list[str]] = []
    runs = _runs(words)
    # Each run whole and without its first or last word; then glued to the word before or after
    # it, which may have stayed whole (14χ ρ ο ν η, ব ছ রের, 9l e t á).
    for shift in _SHIFTS if runs else ():
        variant = _joined(words, runs, shift)
        if variant not in out:
            out.append(variant)
    if _GAP.search(normalised):
        joined = tokens(_GAP.sub("", normalised))
        if joined != words and joined not in out:
            out.append(joined)
    return out


def _joined(words: list[str], runs: list[tuple[int, int]], shift: tuple[int, int]) -> list[str]:
    """The words with each run, its start and end moved by ``shift``, written as one word."""
    variant: list[str] = []
    position = 0
    for start, end in runs:
        first = min(max(start + shift[0], position, 0), end)
        last = max(min(end + shift[1], len(words)), start)
        if last - first < 2:
            first, last = start, end
        variant += words[position:first]
        variant.append("".join(words[first:last]))
        position = last
    return variant + words[position:]


def lookalike_views(plains: list[str]) -> list[str]:
    """The words joined by spaces with look-alike letters of another script read in each script
    (``huіt ans`` with a Cyrillic ``і`` -> ``huit ans``), for the age grammar; empty when no word
    holds any."""
    alternatives = [readings(p) if _mixed_scripts(p) else () for p in plains]
    if not any(alternatives):
        return []
    views = {
        " ".join(alt[k] if alt else p for p, alt in zip(plains, alternatives, strict=True)) for k in (0, -1)
    }
    return sorted(views)


def _mixed_scripts(word: str) -> bool:
    """Whether a word holds a letter of a script other than Latin (Danish ø is Latin)."""
    return not word.isascii() and any(c.isalpha() and not c.isascii() and script(c) != "LATIN" for c in word)
