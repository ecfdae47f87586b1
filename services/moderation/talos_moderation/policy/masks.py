"""What a word with a hidden letter (``v*rführerische``, ``12 añ_s``) can be, for a second reading.

A masked word that stands for a whole one-word term is found by :meth:`Matcher.find_masked`. A
masked word that is one word of a phrase (``pose m#nggoda``), a stem's word (``verführerisch*``),
or a word of the age grammar (``12 y@ars old``) only counts once the text is read again with the
word filled in: :class:`MaskFiller` gives those fillings, from every word the rules know.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from talos_moderation.policy.indexes import MaskIndex
from talos_moderation.policy.normalize import mask_readings

# At most this many fillings of one masked word are read (a mask in a short word fits many).
MAX_FILLINGS = 6
_KEY = 3  # stems are found by their first letters
_LONGEST_ENDING = 4


@dataclass
class MaskFiller:
    """The words a masked word may stand for, and the stems it may begin with."""

    words: MaskIndex = field(default_factory=MaskIndex)
    # Words and stems that take endings: the masked word may be one with an ending after it.
    bases: MaskIndex = field(default_factory=MaskIndex)
    # First letters -> stems of ``stem*`` terms.
    stems: dict[str, list[str]] = field(default_factory=dict)
    # First letter -> stems, for a mask among the first letters; and all stems, for a mask first.
    by_first: dict[str, list[str]] = field(default_factory=dict)
    all_stems: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, words: Iterable[str], stems: Iterable[str], bases: Iterable[str] = ()) -> MaskFiller:
        filler = cls()
        for word in words:
            filler.words.add(word)
        for base in bases:
            filler.bases.add(base)
        for stem in sorted(set(stems)):
            if len(stem) >= _KEY:
                filler.stems.setdefault(stem[:_KEY], []).append(stem)
                filler.by_first.setdefault(stem[0], []).append(stem)
                filler.all_stems.append(stem)
        return filler

    def fillings(self, word: str) -> list[str]:
        """Words (or stem beginnings) that ``word``, with its masks, may be."""
        out: dict[str, None] = {}
        for pattern in sorted(mask_readings(word)):  # one order in every process
            for term in self.words.matches(pattern):
                out[term] = None
            for size in range(1, _LONGEST_ENDING + 1):
                head, tail = pattern[:-size], pattern[-size:]
                if "?" not in tail and "?" in head and len(head) >= _KEY:
                    for base in self.bases.matches(head):
                        out[base + tail] = None
            head = pattern[:_KEY]
            if "?" not in head:
                stems = self.stems.get(head, [])
            else:
                stems = self.all_stems if head[0] == "?" else self.by_first.get(head[0], [])
            for stem in stems:
                if len(stem) <= len(pattern) and all(
                    p in ("?", c) for p, c in zip(pattern, stem, strict=False)
                ):
                    out[stem + pattern[len(stem) :].replace("?", "")] = None
        return list(out)[:MAX_FILLINGS]
