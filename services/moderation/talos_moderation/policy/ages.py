"""Numeric ages in the spellings people use: ``15 yo``, ``15-year-old``, ``15yo``,
``fifteen year old``, ``age 15``, ``aged fifteen``, ``under 16``, ``8th grader``.

Works on normalised text (lowercase, punctuation already turned into spaces by the caller),
so ``15-year-old`` arrives as ``15 year old`` and ``15 y/o`` as ``15 y o``.
"""

from __future__ import annotations

import re

_ONES = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen"]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fourty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_TENS_VALUE = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
               "seventy": 70, "eighty": 80, "ninety": 90}  # fmt: skip
WORD_VALUE: dict[str, int] = {w: i + 1 for i, w in enumerate(_ONES)}
WORD_VALUE.update({w: i + 10 for i, w in enumerate(_TEENS)})
WORD_VALUE["zero"] = 0
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
             "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12}  # fmt: skip

_NUM = (
    r"(?P<num>(?<![\d])\d{1,3}(?![\d])"
    r"|\b(?:" + "|".join(_TENS) + r")\s*(?:" + "|".join(_ONES) + r")?"
    r"|\b(?:" + "|".join(_TEENS + _ONES + ["zero"]) + r"))"
)
# A number followed by a unit and old/young/of age, or by yo / y o (15yo, 15 y/o).
_UNIT = r"(?:years?|yrs?|yr|y|months?|mos?|mths?|mnths?|weeks?|wks?|days?)"
_AFTER = re.compile(_NUM + r"\s*(?:" + _UNIT + r"\s*(?:old|young|of\s+age|o|olds)\b|yo\b|yos\b|yro\b)")
# age 15, aged fifteen, age of 15, ages 12
_BEFORE = re.compile(r"\b(?:age|aged|ages)\s+(?:of\s+|is\s+|about\s+|around\s+|just\s+)?" + _NUM)
# under 16, below 18, younger than 18, not yet 18
_UNDER = re.compile(
    r"\b(?:under|below|younger\s+than|less\s+than|not\s+yet|barely|almost|nearly)\s+"
    r"(?:the\s+)?(?:age\s+(?:of\s+)?)?" + _NUM + r"(?P<unit>\s*(?:years?|yrs?|yr|yo)\b)?"
)
# 8th grade, eighth grader, 15th birthday
_ORDINAL = re.compile(
    r"(?:(?<![\d])(?P<n>\d{1,2})\s*(?:st|nd|rd|th)|\b(?P<w>" + "|".join(_ORDINALS) + r"))"
    r"\s*(?P<what>grade|grader|graders|birthday)\b"
)
_BIG = {"hundred", "thousand", "million", "billion"}


def _value(num: str) -> int | None:
    num = num.strip()
    if num.isdigit():
        return int(num)
    parts = num.split()
    if len(parts) == 1 and parts[0] in WORD_VALUE:
        return WORD_VALUE[parts[0]]
    joined = "".join(parts)
    for tens, value in _TENS_VALUE.items():
        if joined.startswith(tens):
            rest = joined[len(tens) :]
            return value + (WORD_VALUE.get(rest, 0) if rest else 0)
    return None


def _preceded_by_big(text: str, start: int) -> bool:
    """``one hundred fifteen``, ``hundred and five``, ``2 5``: part of a bigger number."""
    before = text[max(0, start - 24) : start].split()
    if not before:
        return False
    if before[-1] in _BIG or before[-1].isdigit():
        return True
    return before[-1] == "and" and len(before) >= 2 and before[-2] in _BIG


def minor_age(text: str, max_minor_age: int = 17) -> bool:
    """True when ``text`` states an age of ``max_minor_age`` or less."""
    if not _may_hold_age(text):
        return False
    for match in _AFTER.finditer(text):
        value = _value(match.group("num"))
        if value is not None and value <= max_minor_age and not _preceded_by_big(text, match.start()):
            return True
    for match in _BEFORE.finditer(text):
        value = _value(match.group("num"))
        if value is not None and value <= max_minor_age:
            return True
    for match in _UNDER.finditer(text):
        value = _value(match.group("num"))
        if value is None:
            continue
        # "under 18" names minors; "under 5 minutes" does not, so small numbers need a unit.
        if value <= max_minor_age + 1 and (value >= 12 or match.group("unit")):
            return True
    for match in _ORDINAL.finditer(text):
        n = match.group("n")
        value = int(n) if n else _ORDINALS[match.group("w")]
        if match.group("what") == "birthday":
            if value <= max_minor_age:
                return True
        elif value <= 12:
            return True
    return False


# Every pattern above needs one of these words (or a number glued to a unit); most prompts
# have none and skip the patterns.
_ANCHORS = frozenset(
    "yo yos yro y o yr yrs year years month months mo mos mth mths mnth mnths week weeks wk wks day "
    "days old olds young age aged ages under below barely almost nearly grade grader graders birthday "
    "younger less yet".split()
)
_SUFFIXES = ("yo", "yos", "yro", "yr", "yrs", "year", "years", "old", "olds", "grade", "grader", "birthday")


def _may_hold_age(text: str) -> bool:
    for word in text.split():
        if word in _ANCHORS or word.endswith(_SUFFIXES):
            return True
        if not word.isalpha() and not word.isdigit():  # 15yo, 8th, y0
            return True
    return False
