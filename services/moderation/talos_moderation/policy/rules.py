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
* ``<list>_weak_terms``: words that are ordinary words in other languages (Spanish ``nina``
  is also a name): they count only when the same text shows the language, through one of its
  ``evidence_words`` or one of its other terms;
* ``<list>_exceptions``: phrases inside which a term of that list does not count;
* ``prefixes`` / ``suffixes``: clitics and endings that attach to every term of the language;
* ``ages``: the language's age grammar (see :mod:`ages`);
* ``substring_exceptions``, ``minor_emoji``, ``sexual_emoji``.

Anything missing, unreadable, unparseable or of the wrong shape raises :class:`RulesError`, and
the policy then blocks every prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from talos_moderation.policy.ages import AgeGrammar, AgeRulesError
from talos_moderation.policy.matcher import Matcher, entry_words

MANIFEST = "manifest.json"
LISTS = ("minor", "sexual", "standalone", "negative_adulthood", "negative_clothing")
POSITIVE = ("minor", "sexual", "standalone")
NEGATIVE = ("negative_adulthood", "negative_clothing")
EVIDENCE = "lang"
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


def _strings(name: str, data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{name}: {key} must be a list of strings")
    return value


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
        matcher = Matcher(substring_min=substring_min, substring_lists=frozenset(POSITIVE))
        ages = AgeGrammar(max_minor_age=max_age)
        emoji: dict[str, list[str]] = {"minor_emoji": [], "sexual_emoji": []}
        exceptions: list[str] = []
        weak_languages: set[str] = set()
        languages: list[str] = []
        for name, data in documents:
            lang = data.get("language", "")
            if not isinstance(lang, str) or "~" in lang or ":" in lang:
                raise RulesError(f"{name}: language must be a short name")
            if lang and lang not in languages:
                languages.append(lang)
            prefixes, suffixes = (
                [w for e in _strings(name, data, key) for w, _ in entry_words(e)]
                for key in ("prefixes", "suffixes")
            )
            if prefixes or suffixes:
                if not lang:
                    raise RulesError(f"{name}: prefixes and suffixes need a language")
                matcher.add_language(lang, prefixes, suffixes)
            has_weak = False
            try:
                for list_name in LISTS:
                    matcher.add(
                        list_name,
                        _strings(name, data, f"{list_name}_terms"),
                        _strings(name, data, f"{list_name}_exceptions"),
                        lang,
                    )
                    weak = _strings(name, data, f"{list_name}_weak_terms")
                    if weak and not lang:
                        raise RulesError(f"{name}: weak terms need a language")
                    if weak:
                        has_weak = True
                        matcher.add(f"{list_name}~{lang}", weak, (), lang)
                if has_weak:
                    weak_languages.add(lang)
                    evidence = _strings(name, data, "evidence_words")
                    for list_name in LISTS:
                        evidence += _strings(name, data, f"{list_name}_terms")
                    matcher.add(f"{EVIDENCE}~{lang}", evidence, (), lang)
                if "ages" in data:
                    ages.add(lang or name, data["ages"])
            except (ValueError, AgeRulesError) as exc:
                if isinstance(exc, RulesError):
                    raise
                raise RulesError(f"{name}: {exc}") from None
            exceptions += _strings(name, data, "substring_exceptions")
            for key, items in emoji.items():
                items += [e for e in _strings(name, data, key) if e]
        for required in ("minor", "sexual"):
            if not matcher.sizes.get(required):
                raise RulesError(f"{required}_terms must not be empty")
        matcher.set_substring_exceptions(exceptions)
        extra = {f"{EVIDENCE}~{lang}" for lang in weak_languages}
        return cls(
            version=version.strip(),
            matcher=matcher,
            ages=ages,
            minor_emoji=tuple(emoji["minor_emoji"]),
            sexual_emoji=tuple(emoji["sexual_emoji"]),
            max_minor_age=max_age,
            languages=tuple(languages),
            positive_lists=frozenset(
                {*POSITIVE, *(f"{n}~{lang}" for n in POSITIVE for lang in weak_languages)} | extra
            ),
            negative_lists=frozenset(
                {*NEGATIVE, *(f"{n}~{lang}" for n in NEGATIVE for lang in weak_languages)} | extra
            ),
        )

    @staticmethod
    def resolve(found: set[str]) -> set[str]:
        """The lists present: every strong hit, and a weak hit where its language shows."""
        present = {name for name in found if "~" not in name}
        for name in found:
            base, _, lang = name.partition("~")
            if lang and base != EVIDENCE and f"{EVIDENCE}~{lang}" in found:
                present.add(base)
        return present


__all__ = ["LISTS", "Rules", "RulesError", "entry_words", "load_documents"]
