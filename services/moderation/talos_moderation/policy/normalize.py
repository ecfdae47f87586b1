"""Text normalisation that undoes the usual ways of hiding a word from a filter.

``normalize`` turns a prompt into plain lowercase text: Unicode NFKC (full-width and
mathematical letters), zero-width and other invisible characters removed, case folded,
accents and other decorating marks stripped (the marks that are part of a letter in Indic and
Thai scripts stay), digits of every script read as 0-9, look-alike symbols and Latin letters
folded by Unicode's confusables data (see :mod:`skeleton`), prompt emphasis syntax such as
``(word:1.3)`` reduced to the word. ``tokens`` splits that text into words, keeping the symbols
leetspeak uses. :func:`forms` gives every reading of one word that the matcher tries: with
symbols dropped, with leetspeak decoded, with look-alike letters of another script read as
Latin (and the reverse), and with repeated letters collapsed. :func:`masked_words` and
:func:`mask_readings` give words with a hidden letter (``n*ked``). Spacing tricks (``c h i l d``,
``chi ld``) are handled by the matcher, which joins neighbouring short words.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

from talos_moderation.policy.skeleton import IN_PLACE, readings

# Characters that render as nothing (Cf covers zero-width space/joiners, BOM, soft hyphen,
# bidi controls, tag characters); these are removed outright. U+0640 is the Arabic tatweel,
# which only stretches a word.
_INVISIBLE_EXTRA = {"\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u180b", "\u180c", "\u180d", "\u0640"}
# Characters that render as blank space; these become a space.
_BLANK = {"\u2800", "\u3164", "\uffa0", "\u1680"}

# Marks that only decorate a letter (accents, Arabic vowel signs, Hebrew points, variation
# selectors, stacked "zalgo" marks) are dropped. Marks that are letters' own parts in their
# script (Devanagari, Bengali and Thai vowel signs, kana voicing) are kept: without them
# different words would read the same.
_DROPPED_MARKS = (
    (0x0300, 0x036F), (0x0483, 0x0489), (0x0591, 0x05C7), (0x0610, 0x061A), (0x064B, 0x065F),
    (0x0670, 0x0670), (0x06D6, 0x06ED), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF),
    (0xFE00, 0xFE0F), (0xFE20, 0xFE2F), (0xE0100, 0xE01EF),
)  # fmt: skip


def _dropped_mark(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _DROPPED_MARKS)


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
    if category == "Nd":  # Arabic-Indic, Persian, Devanagari, Thai... digits read as 0-9
        return str(unicodedata.decimal(char))
    out = []
    for piece in unicodedata.normalize("NFD", char.casefold()):
        if unicodedata.category(piece).startswith("M") and _dropped_mark(piece):
            continue
        out.append(IN_PLACE.get(piece, piece))
    return "".join(out)


_TABLE = _CharTable()

# (word:1.3) and [word:0.5] -> word; <lora:name:0.8> -> name.
_WEIGHT = re.compile(r":\s*[-+]?\d*\.?\d+\s*(?=[)\]}>])")
_LORA = re.compile(r"<\s*(?:lora|lyco|hypernet|embedding)\s*:")
# Possessive 's (kid's -> kid) and other apostrophes (don't -> dont).
_POSSESSIVE = re.compile(r"['’ʼ`´]s\b")
_APOSTROPHE = re.compile(r"['’ʼ`´]")
# French and Italian elision (l'école, d'Ève, qu'elle, dell'asilo, un'alunna): the article is a
# word of its own, so the noun after it reads as it does everywhere else.
_ELISION = re.compile(
    r"\b([a-z]|qu|jusqu|lorsqu|puisqu|quoiqu|dell|dall|nell|sull|all|coll|quell|quest|un|tutt)['’ʼ`´](?=[^\W\d_])"
)
# Thai abbreviations are one letter and a full stop before a number (ป.5 for the fifth year of
# primary school); glued to the word before them (Thai has no spaces), they become a word of
# their own again.
_THAI_ABBREVIATION = re.compile(r"(?<=[\u0e01-\u0e4f])([\u0e01-\u0e2e]\.\s?\d)")

# The symbols leetspeak uses stay inside words; every other non-word character splits.
LEET_SYMBOLS = "@$!|+€£"


def _kept_marks() -> str:
    """A character class of the marks that stay part of a word (Indic and Thai vowel signs...)."""
    ranges: list[list[int]] = []
    for code in range(0x0300, 0x20000):
        if unicodedata.category(chr(code)).startswith("M"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


_MARKS = _kept_marks()
_TOKEN = re.compile(rf"[\w{_MARKS}@$!|+€£]+")
_ALNUM = re.compile(r"[^\W_]")
# Characters that hide a letter inside a word (n*ked, n_ked, s#x): the word is also read with
# each of them standing for one unknown letter.
MASKS = "*_#?%^~"
_PIECE = rf"(?:[^\W_]|[{_MARKS}@$!|+€£])+"
_MASKED = re.compile(rf"{_PIECE}(?:[*_#?%^~]+{_PIECE})+")
_SYMBOLS = re.compile(r"[@$!|+€£]")
_AT_INSIDE = re.compile(rf"{_PIECE}@{_PIECE}")


def normalize(text: str) -> str:
    """NFKC, invisible characters, case, accents, look-alikes and emphasis syntax undone."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.translate(_TABLE) if not text.isascii() else text.lower()
    if not text.isascii():
        # Folding can expose characters that NFKC would compose or change again; the last
        # composition puts Hangul syllables and kana with voicing marks back together.
        text = unicodedata.normalize("NFC", unicodedata.normalize("NFKC", text).translate(_TABLE))
    if "<" in text:
        text = _LORA.sub(" ", text)
    if ":" in text:
        text = _WEIGHT.sub("", text)
    if "'" in text or not text.isascii() or "`" in text:
        text = _POSSESSIVE.sub("", text)
        text = _ELISION.sub(r"\1 ", text)
        text = _APOSTROPHE.sub("", text)
        if "." in text:
            text = _THAI_ABBREVIATION.sub(r" \1", text)
    return text


def tokens(text: str) -> list[str]:
    """Words of normalised text, with leetspeak symbols kept inside them."""
    if "_" in text:
        text = text.replace("_", " ")
    return [t for t in _TOKEN.findall(text) if t.isalnum() or _ALNUM.search(t)]


def masked_words(text: str) -> list[str]:
    """Words of normalised text with masking characters inside them (``n*ked``), masks kept.

    ``@`` inside a word is leetspeak for ``a`` and also a common mask (``se@si``): such a word is
    also given with it as a mask."""
    out = _MASKED.findall(text) if any(m in text for m in MASKS) else []
    if "@" in text:
        out += [w.replace("@", "*") for w in _AT_INSIDE.findall(text)]
    return out


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

    Exact readings: the word without symbols; when it mixes letters with digits or symbols,
    its leetspeak decodings; when it holds look-alike letters of another script, its readings
    in Latin and in that script (see :mod:`skeleton`). Collapsed readings (repeated characters
    reduced to one) are given only for readings that contain a doubled character, so ``ten``
    is never read as ``teen`` but ``teeeen`` and ``t33n`` are.
    """
    exact = {plain(token)}
    if not token.isalpha() and _HAS_LETTER.search(token) and _HAS_LEET.search(token):
        exact.update(_leet_readings(token))
    if not token.isascii():
        for reading in list(exact):
            exact.update(readings(reading))
    exact.discard("")
    collapsed = {collapse(f) for f in exact if _DOUBLE.search(f)}
    return frozenset(exact), frozenset(collapsed)


def mask_readings(word: str) -> set[str]:
    """Readings of a masked word with ``?`` for each hidden letter: ``n*k3d`` -> ``n?ked``."""
    out = set()
    for reading in {word} | (_leet_readings(word) if _HAS_LEET.search(word) else set()):
        reading = _SYMBOLS.sub("", reading)
        for variant in (_MASK_RUN.sub("?", reading), _MASK_ONE.sub("?", reading)):
            letters = len(variant) - variant.count("?")
            if letters >= 2 and variant.count("?") * 2 <= len(variant):
                out.add(variant)
    return out


_MASK_ONE = re.compile(r"[*_#?%^~]")
_MASK_RUN = re.compile(r"[*_#?%^~]+")


_LEADING_NUMBER = re.compile(r"^\d+")


def leet_text(words: list[str], *, keep_numbers: bool = False) -> str:
    """The words joined by spaces, with mixed letter/digit words decoded (reading A); with
    ``keep_numbers``, a number that begins the word stays one (``14enn3`` -> ``14enne``)."""
    out = []
    for w in words:
        if w.isalpha() or w.isdigit():
            out.append(w)
        elif _HAS_LETTER.search(w) and _HAS_LEET.search(w):
            number = _LEADING_NUMBER.match(w) if keep_numbers else None
            head = number.group() if number else ""
            out.append(head + w[len(head) :].translate(_LEET_A))
        else:
            out.append(plain(w))
    return " ".join(out)
