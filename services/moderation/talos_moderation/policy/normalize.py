"""Text normalisation that undoes the usual ways of hiding a word from a filter.

``normalize`` turns a prompt into plain lowercase text: Unicode NFKC (full-width and
mathematical letters), zero-width and other invisible characters removed, case folded,
accents stripped, look-alike Cyrillic and Greek letters folded to Latin, prompt emphasis
syntax such as ``(word:1.3)`` reduced to the word. ``tokens`` splits that text into words,
keeping the symbols leetspeak uses. :func:`forms` gives every reading of one word that the
matcher tries: with symbols dropped, with leetspeak decoded, and with repeated letters
collapsed. Spacing tricks (``c h i l d``, ``chi ld``) are handled by the matcher, which joins
neighbouring short words.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

# Characters that render as nothing (Cf covers zero-width space/joiners, BOM, soft hyphen,
# bidi controls, tag characters); these are removed outright.
_INVISIBLE_EXTRA = {"\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u180b", "\u180c", "\u180d"}
# Characters that render as blank space; these become a space.
_BLANK = {"\u2800", "\u3164", "\uffa0", "\u1680"}

# Look-alike letters from other scripts that NFKC leaves alone.
_HOMOGLYPHS = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
    "һ": "h", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ɡ": "g", "ь": "b",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "γ": "y", "μ": "u",
    # Latin look-alikes
    "ı": "i", "ȷ": "j", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t", "ß": "ss", "æ": "ae",
    "œ": "oe", "þ": "th", "ð": "d",
}  # fmt: skip


def _letter_emoji() -> dict[str, str]:
    table: dict[str, str] = {}
    for base in (0x1F150, 0x1F170, 0x1F1E6):  # negative circled, negative squared, regional
        for i in range(26):
            table[chr(base + i)] = chr(ord("a") + i)
    return table


_LETTER_EMOJI = _letter_emoji()


class _CharTable(dict[int, str]):
    """A ``str.translate`` table that works out each new character once and remembers it."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        value = _fold_char(char)
        if len(self) < 200_000:
            self[code] = value
        return value


def _fold_char(char: str) -> str:
    if char in _LETTER_EMOJI:
        return _LETTER_EMOJI[char]
    category = unicodedata.category(char)
    if char in _BLANK or category in ("Zs", "Zl", "Zp", "Cc"):
        return " "
    if category == "Cf" or char in _INVISIBLE_EXTRA:
        return ""
    out = []
    for piece in unicodedata.normalize("NFD", char.casefold()):
        if unicodedata.category(piece) in ("Mn", "Me", "Mc"):
            continue
        out.append(_HOMOGLYPHS.get(piece, piece))
    return "".join(out)


_TABLE = _CharTable()

# (word:1.3) and [word:0.5] -> word; <lora:name:0.8> -> name.
_WEIGHT = re.compile(r":\s*[-+]?\d*\.?\d+\s*(?=[)\]}>])")
_LORA = re.compile(r"<\s*(?:lora|lyco|hypernet|embedding)\s*:")
# Possessive 's (kid's -> kid) and other apostrophes (don't -> dont).
_POSSESSIVE = re.compile(r"['’ʼ`´]s\b")
_APOSTROPHE = re.compile(r"['’ʼ`´]")

# The symbols leetspeak uses stay inside words; every other non-word character splits.
LEET_SYMBOLS = "@$!|+€£"
_TOKEN = re.compile(r"[\w@$!|+€£]+")
_ALNUM = re.compile(r"[^\W_]")
_SYMBOLS = re.compile(r"[@$!|+€£]")


def normalize(text: str) -> str:
    """NFKC, invisible characters, case, accents, look-alikes and emphasis syntax undone."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.translate(_TABLE) if not text.isascii() else text.lower()
    if not text.isascii():
        # Folding can expose characters that NFKC would compose or change again.
        text = unicodedata.normalize("NFKC", text).translate(_TABLE)
    if "<" in text:
        text = _LORA.sub(" ", text)
    if ":" in text:
        text = _WEIGHT.sub("", text)
    if "'" in text or not text.isascii() or "`" in text:
        text = _POSSESSIVE.sub("", text)
        text = _APOSTROPHE.sub("", text)
    return text


def tokens(text: str) -> list[str]:
    """Words of normalised text, with leetspeak symbols kept inside them."""
    if "_" in text:
        text = text.replace("_", " ")
    return [t for t in _TOKEN.findall(text) if t.isalnum() or _ALNUM.search(t)]


def plain(token: str) -> str:
    """The word with leetspeak symbols dropped."""
    return token if token.isalnum() else _SYMBOLS.sub("", token)


# Two readings where a symbol is ambiguous (1 is i or l; | is l or i; 6 is g or b).
_LEET_A = str.maketrans({"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t",
                         "8": "b", "9": "g", "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e",
                         "£": "l"})  # fmt: skip
_LEET_B = str.maketrans({"0": "o", "1": "l", "2": "z", "3": "e", "4": "a", "5": "s", "6": "b", "7": "t",
                         "8": "b", "9": "g", "@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e",
                         "£": "l"})  # fmt: skip
_AMBIGUOUS = {"1": "il", "|": "li", "6": "gb"}
_MAX_AMBIGUOUS = 4


def _leet_readings(token: str) -> set[str]:
    """Every decoding of the ambiguous symbols (up to 2**4 of them), else the two uniform ones."""
    positions = [i for i, c in enumerate(token) if c in _AMBIGUOUS]
    if not positions or len(positions) > _MAX_AMBIGUOUS:
        return {token.translate(_LEET_A), token.translate(_LEET_B)}
    base = list(token.translate(_LEET_A))
    readings = set()
    for choice in itertools.product(*(_AMBIGUOUS[token[i]] for i in positions)):
        for i, letter in zip(positions, choice, strict=True):
            base[i] = letter
        readings.add("".join(base))
    return readings


_HAS_LETTER = re.compile(r"[^\W\d_]")
_HAS_LEET = re.compile(r"[0-9@$!|+€£]")
# Repeats of letters only: "1000" stays a number.
_DOUBLE = re.compile(r"([^\W\d_])\1")
_RUN = re.compile(r"([^\W\d_])\1+")
_RUN3 = re.compile(r"([^\W\d_])\1\1+")


def collapse(word: str) -> str:
    """Every run of a repeated character reduced to one (``chiiild`` -> ``child``)."""
    return _RUN.sub(r"\1", word)


def collapse3(word: str, keep: int = 2) -> str:
    """Runs of three or more reduced to ``keep`` characters."""
    return _RUN3.sub(lambda m: m.group(1) * keep, word)


@lru_cache(maxsize=65536)
def forms(token: str) -> tuple[frozenset[str], frozenset[str]]:
    """(exact readings, collapsed readings) of one word.

    Exact readings: the word without symbols and, when it mixes letters with digits or
    symbols, its two leetspeak decodings. Collapsed readings (repeated characters reduced to
    one) are given only for readings that contain a doubled character, so ``ten`` is never
    read as ``teen`` but ``teeeen`` and ``t33n`` are.
    """
    exact = {plain(token)}
    if not token.isalpha() and _HAS_LETTER.search(token) and _HAS_LEET.search(token):
        exact.update(_leet_readings(token))
    exact.discard("")
    collapsed = {collapse(f) for f in exact if _DOUBLE.search(f)}
    return frozenset(exact), frozenset(collapsed)


def leet_text(words: list[str]) -> str:
    """The words joined by spaces, with mixed letter/digit words decoded (reading A)."""
    out = []
    for w in words:
        if w.isalpha() or w.isdigit():
            out.append(w)
        elif _HAS_LETTER.search(w) and _HAS_LEET.search(w):
            out.append(w.translate(_LEET_A))
        else:
            out.append(plain(w))
    return " ".join(out)
