"""The versioned rule files, loaded into the matcher and the age grammar.

The rules are data: a *manifest* (``rules/manifest.json`` in the package) holds the version,
the shared settings and a list of ``files``, one per language plus one for what every language
shares (emoji, abuse-material code words). Every file may hold any of the lists, so a single
file without ``files`` (the older form) works as well. ``TALOS_MODERATION_RULES_PATH`` may
name a manifest, a folder holding ``manifest.json``, or a single rule file. Each file says its
``language``; in it:

* ``<list>_terms``: entries (words or phrases, normalised exactly as prompts are), for the lists
  ``minor``, ``sexual``, ``standalone`` (blocks on its own), ``negative_adulthood`` and
  ``negative_clothing``; an entry word ending in ``+`` is a stem that takes one of the language's
  ``suffixes``, one ending in ``*`` matches any word that begins with it;
* ``<list>_together_terms``: terms of two words or more that count when all their words are
  in the text, in any order (``glaubt noch an den Weihnachtsmann``, ``Weihnachtsmann ... glaubt``);
* ``<list>_weak_terms``: words that are ordinary words in other languages (Spanish ``nina``
  is also a name): they count only when the same text shows the language, through one of its
  ``evidence_words`` or one of its other terms;
* ``<list>_exceptions``: phrases inside which a term of that list does not count;
* ``prefixes`` / ``suffixes``: clitics and endings that attach to every term of the language;
* ``ages``: the language's age grammar (see :mod:`ages`);
* ``romanized``: true for a language whose Cyrillic terms are also found in Latin
  transliteration, whatever the scheme (see :mod:`translit`);
* ``evidence_letters``: letters that show the language as its evidence words do (Spanish ``ñ``),
  looked for in the text as written;
* ``substring_exceptions``, ``minor_emoji``, ``sexual_emoji``.

Anything missing, unreadable, unparseable or of the wrong shape raises :class:`RulesError`, and
the policy then blocks every prompt.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from talos_moderation.policy.ages import AgeGrammar, AgeRulesError
from talos_moderation.policy.masks import MaskFiller
from talos_moderation.policy.matcher import Matcher, base_list, entry_words
from talos_moderation.policy.normalize import normalize

MANIFEST = "manifest.json"
LISTS = ("minor", "sexual", "standalone", "negative_adulthood", "negative_clothing")
POSITIVE = ("minor", "sexual", "standalone")
NEGATIVE = ("negative_adulthood", "negative_clothing")
EVIDENCE = "lang"
# One entry written with alternatives stands for at most this many phrases.
MAX_ALTERNATIVES = 512
# Evidence words alone (not terms): what shows a language in which a word is innocent.
WORDS = "words"
Document = tuple[str, dict[str, Any]]  # (file name, content)


class RulesError(ValueError):
    """The rule files are missing, unreadable or incomplete."""


def _parse(name: str, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RulesError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{name} must hold a JSON object")
    return data


def _read(base: Traversable | Path, name: str) -> dict[str, Any]:
    try:
        text = base.joinpath(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RulesError(f"cannot read rule file {name}: {type(exc).__name__}") from None
    return _parse(name, text)


def load_documents(path: Path | None = None) -> list[Document]:
    """The manifest (first) and every file it names: the packaged rules when ``path`` is None."""
    base: Traversable | Path
    if path is None:
        base, name = resources.files("talos_moderation.policy").joinpath("rules"), MANIFEST
    elif path.is_dir():
        base, name = path, MANIFEST
    else:
        base, name = path.parent, path.name
    manifest = _read(base, name)
    files = manifest.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise RulesError("files must be a list of file names")
    return [(name, manifest), *((f, _read(base, f)) for f in files)]


def alternatives(entry: str) -> list[str]:
    """The phrases an entry stands for: a word written ``a|b|c`` is any of them, so
    ``mn|min 8er|gheir hdoom|malabis`` is eight phrases, each read word by word as usual."""
    if "|" not in entry:
        return [entry]
    choices = [piece.split("|") for piece in entry.split()]
    if any(not c for choice in choices for c in choice):
        raise ValueError(f"'{entry}': an empty alternative")
    if math.prod(len(choice) for choice in choices) > MAX_ALTERNATIVES:
        raise ValueError(f"'{entry}': more than {MAX_ALTERNATIVES} phrases")
    return [" ".join(words) for words in itertools.product(*choices)]


def _strings(name: str, data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{name}: {key} must be a list of strings")
    return value


def _phrases(name: str, data: dict[str, Any], key: str) -> list[str]:
    """A list of terms or exception phrases, each phrase with alternatives spelled out."""
    try:
        return [phrase for entry in _strings(name, data, key) for phrase in alternatives(entry)]
    except ValueError as exc:
        raise RulesError(f"{name}: {key}: {exc}") from None


@dataclass
class Rules:
    """Loaded, validated rules."""

    version: str
    matcher: Matcher
    ages: AgeGrammar
    minor_emoji: tuple[str, ...]
    sexual_emoji: tuple[str, ...]
    max_minor_age: int
    languages: tuple[str, ...]
    positive_lists: frozenset[str]
    negative_lists: frozenset[str]
    # Language -> letters only it (of the rules' languages with weak terms) writes: one of them
    # in a text shows the language as an evidence word does (Spanish ñ).
    evidence_letters: dict[str, str] = field(default_factory=dict)
    # What a word with a hidden letter may be (see :mod:`masks`).
    masks: MaskFiller = field(default_factory=MaskFiller)

    @classmethod
    def from_text(cls, text: str) -> Rules:
        """A single rule file (no ``files``)."""
        return cls.from_documents([("rules", _parse("rule file", text))])

    @classmethod
    def load(cls, path: Path | None) -> Rules:
        """The rules at ``path`` (manifest, folder or single file), or the packaged ones."""
        return cls.from_documents(load_documents(path))

    @classmethod
    def from_documents(cls, documents: list[Document]) -> Rules:
        manifest = documents[0][1]
        version = manifest.get("version")
        if not isinstance(version, str) or not version.strip():
            raise RulesError("rule file has no version")
        substring_min = manifest.get("substring_min_length", 0)
        max_age = manifest.get("max_minor_age", 17)
        if not isinstance(substring_min, int) or not isinstance(max_age, int) or not 0 < max_age < 30:
            raise RulesError("substring_min_length and max_minor_age must be small integers")
        if 0 < substring_min < 4:
            raise RulesError("substring_min_length below 4 would match inside ordinary words")
        build = _Builder(
            Matcher(
                substring_min=substring_min,
                substring_lists=frozenset(POSITIVE),
                unjoined=frozenset({EVIDENCE, WORDS}),
            ),
            AgeGrammar(max_minor_age=max_age),
            _innocent_words(documents),
        )
        for name, data in documents:
            try:
                build.document(name, data)
            except (ValueError, AgeRulesError) as exc:
                if isinstance(exc, RulesError):
                    raise
                raise RulesError(f"{name}: {exc}") from None
        matcher = build.matcher
        for required in ("minor", "sexual"):
            if not matcher.sizes.get(required):
                raise RulesError(f"{required}_terms must not be empty")
        matcher.set_substring_exceptions(build.substring_exceptions)
        term_words, stems = matcher.mask_words()
        age_words = build.ages.vocabulary()
        # Age words also begin longer words (zwölfjährige, kahdeksanvuotias).
        masks = MaskFiller.build(term_words | age_words, stems | age_words, matcher.affix_bases())
        names = (
            build.names
            | matcher.together_parts
            | {f"{EVIDENCE}~{lang}" for lang in build.evidence}
            | {f"{WORDS}~{lang}" for lang in build.innocent_languages}
        )
        return cls(
            version=version.strip(),
            matcher=matcher,
            ages=build.ages,
            minor_emoji=tuple(build.emoji["minor_emoji"]),
            sexual_emoji=tuple(build.emoji["sexual_emoji"]),
            max_minor_age=max_age,
            languages=tuple(build.languages),
            positive_lists=frozenset(n for n in names if _base(n) in (*POSITIVE, EVIDENCE, WORDS)),
            negative_lists=frozenset(n for n in names if _base(n) in (*NEGATIVE, EVIDENCE, WORDS)),
            evidence_letters=build.evidence_letters,
            masks=masks,
        )

    def shown(self, text: str) -> set[str]:
        """Evidence of the languages whose letters ``text`` (as written) holds: for their weak
        terms, and against words innocent in them (Vietnamese gọi is not Romanian goi)."""
        if text.isascii() or not self.evidence_letters:
            return set()
        letters = set(text.casefold())
        shown = {lang for lang, own in self.evidence_letters.items() if letters.intersection(own)}
        return {f"{EVIDENCE}~{lang}" for lang in shown} | {f"{WORDS}~{lang}" for lang in shown}

    @staticmethod
    def resolve(found: set[str]) -> set[str]:
        """The lists present: every strong hit; a weak hit where its language shows; a hit of a
        word that is an ordinary word in other languages (``list~+lang^other,...``) where its own
        language shows, or none of those does through its evidence words."""
        present = {name for name in found if "~" not in name}
        for name in found:
            base, _, rest = name.partition("~")
            if not rest or base in (EVIDENCE, WORDS) or base in present:
                continue
            lang, _, innocent = rest.partition("^")
            strong, lang = lang.startswith("+"), lang.lstrip("+")
            if (lang and f"{EVIDENCE}~{lang}" in found) or (
                strong and not any(f"{WORDS}~{other}" in found for other in innocent.split(","))
            ):
                present.add(base)
        return present


def _innocent_words(documents: list[Document]) -> dict[str, set[str]]:
    """Word -> the languages in which it is an ordinary word (``innocent_words``)."""
    out: dict[str, set[str]] = {}
    for name, data in documents:
        words = _strings(name, data, "innocent_words")
        lang = data.get("language", "")
        if words and not (isinstance(lang, str) and lang):
            raise RulesError(f"{name}: innocent words need a language")
        for entry in words:
            for word, _ in entry_words(entry):
                out.setdefault(word, set()).add(lang)
    return out


def _base(name: str) -> str:
    """The list a name belongs to: ``minor~es``, ``minor~es^en`` and ``minor&3.0`` are ``minor``."""
    return base_list(name).split("&", 1)[0]


def _single_word(entry: str) -> str:
    words = entry_words(entry)
    return words[0][0] if len(words) == 1 and words[0][1] in ("", "=") else ""


@dataclass
class _Builder:
    """Adds one rule file after another to the matcher and the age grammar."""

    matcher: Matcher
    ages: AgeGrammar
    innocent: dict[str, set[str]]
    names: set[str] = field(default_factory=lambda: set(LISTS))
    evidence: set[str] = field(default_factory=set)
    innocent_languages: set[str] = field(default_factory=set)
    evidence_letters: dict[str, str] = field(default_factory=dict)
    languages: list[str] = field(default_factory=list)
    substring_exceptions: list[str] = field(default_factory=list)
    emoji: dict[str, list[str]] = field(default_factory=lambda: {"minor_emoji": [], "sexual_emoji": []})

    def document(self, name: str, data: dict[str, Any]) -> None:
        lang = data.get("language", "")
        if not isinstance(lang, str) or any(c in lang for c in "~:^,&"):
            raise RulesError(f"{name}: language must be a short name")
        if lang and lang not in self.languages:
            self.languages.append(lang)
        # Affixes are normalised as words are, but kept whole: an ending may be a vowel sign
        # alone (Hindi ों, Bengali ে), which is no word of its own.
        prefixes, suffixes = (
            [a for a in ("".join(normalize(e).split()) for e in _strings(name, data, key)) if a]
            for key in ("prefixes", "suffixes")
        )
        if prefixes or suffixes:
            if not lang:
                raise RulesError(f"{name}: prefixes and suffixes need a language")
            self.matcher.add_language(lang, prefixes, suffixes)
        romanized = data.get("romanized", False)
        if not isinstance(romanized, bool) or (romanized and not lang):
            raise RulesError(f"{name}: romanized must be true or false, with a language")
        if romanized:
            self.matcher.add_romanization(lang)
        has_weak = False
        for list_name in LISTS:
            self._terms(list_name, lang, _phrases(name, data, f"{list_name}_terms"), weak=False)
            self.matcher.add(list_name, (), _phrases(name, data, f"{list_name}_exceptions"), lang)
            self.matcher.add_together(list_name, _strings(name, data, f"{list_name}_together_terms"), lang)
            weak = _phrases(name, data, f"{list_name}_weak_terms")
            if weak and not lang:
                raise RulesError(f"{name}: weak terms need a language")
            has_weak = has_weak or bool(weak)
            self._terms(list_name, lang, weak, weak=True)
        letters = data.get("evidence_letters", "")
        if not isinstance(letters, str) or (letters and not (has_weak or data.get("innocent_words"))):
            raise RulesError(f"{name}: evidence_letters must be a string, with weak terms or innocent words")
        if letters:
            self.evidence_letters[lang] = letters.casefold()
        if has_weak:
            self.evidence.add(lang)
            # A language's terms show it too, except a word that is an ordinary word elsewhere.
            # One-letter evidence would show a language in every letter-spaced word (b a r n).
            evidence = [w for w in _strings(name, data, "evidence_words") if len(normalize(w).strip()) > 1]
            for list_name in LISTS:
                evidence += [
                    term
                    for term in _phrases(name, data, f"{list_name}_terms")
                    if not self.innocent.get(_single_word(term), set()) - {lang}
                ]
            self.matcher.add(f"{EVIDENCE}~{lang}", evidence, (), lang)
        if lang and data.get("innocent_words"):
            self.innocent_languages.add(lang)
            # Exact words: an ending on a short function word would show the language too often.
            self.matcher.add(
                f"{WORDS}~{lang}",
                [w for w in _strings(name, data, "evidence_words") if len(normalize(w).strip()) > 1],
            )
        if "ages" in data:
            self.ages.add(lang or name, data["ages"])
        self.substring_exceptions += _strings(name, data, "substring_exceptions")
        for key, items in self.emoji.items():
            items += [e for e in _strings(name, data, key) if e]

    def _terms(self, list_name: str, lang: str, entries: list[str], *, weak: bool) -> None:
        """Adds terms under their list's name: ``list`` (strong), ``list~lang`` (weak), and
        ``list~+lang^others`` for a strong word that is an ordinary word in other languages."""
        groups: dict[str, list[str]] = {}
        for entry in entries:
            others = sorted(self.innocent.get(_single_word(entry), set()) - {lang})
            if weak:
                key = f"{list_name}~{lang}"
            elif others:
                key = f"{list_name}~+{lang}^{','.join(others)}"
            else:
                key = list_name
            groups.setdefault(key, []).append(entry)
        for key, items in groups.items():
            self.matcher.add(key, items, (), lang)
            self.names.add(key)
            if not weak and key != list_name:  # strong terms all count towards the list's size
                self.matcher.sizes[list_name] = self.matcher.sizes.get(list_name, 0) + len(items)


__all__ = [
    "LISTS",
    "MAX_ALTERNATIVES",
    "Rules",
    "RulesError",
    "alternatives",
    "entry_words",
    "load_documents",
]
