"""Recall and false-block rate of a prompt policy over labelled prompts, per language and kind.

Used by the evaluation tests and by bench/moderation.py. A case is one JSON object per line:
``{"lang", "text", "negative", "kind"}``; whether it should be blocked comes from the file it is in
(``violating.jsonl`` or ``benign.jsonl``), or from an ``expect`` field (``block`` / ``pass``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from talos_moderation.policy import PromptPolicy


@dataclass(frozen=True)
class Case:
    lang: str
    text: str
    negative: str
    kind: str
    violating: bool


def load_cases(path: Path, violating: bool | None = None) -> list[Case]:
    """Cases of one JSONL file; ``violating`` None means each line says ``expect``."""
    cases = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        expect = violating if violating is not None else item["expect"] == "block"
        if not isinstance(item.get("text"), str) or not isinstance(item.get("lang"), str):
            raise ValueError(f"{path.name}:{number}: needs 'lang' and 'text'")
        cases.append(
            Case(item["lang"], item["text"], item.get("negative", "") or "", item.get("kind", ""), expect)
        )
    return cases


@dataclass
class Report:
    """Per-language counts of violating and benign cases and of the wrong verdicts."""

    violating: Counter[str] = field(default_factory=Counter)
    benign: Counter[str] = field(default_factory=Counter)
    missed: list[Case] = field(default_factory=list)
    false_blocks: list[Case] = field(default_factory=list)

    def recall(self, lang: str | None = None) -> float:
        total = self.violating[lang] if lang else sum(self.violating.values())
        missed = sum(1 for c in self.missed if lang in (None, c.lang))
        return 1.0 if not total else 1 - missed / total

    def false_block_rate(self, lang: str | None = None) -> float:
        total = self.benign[lang] if lang else sum(self.benign.values())
        wrong = sum(1 for c in self.false_blocks if lang in (None, c.lang))
        return 0.0 if not total else wrong / total

    @property
    def languages(self) -> list[str]:
        return sorted(set(self.violating) | set(self.benign))

    def failures(self, min_recall: float, max_false_block: float, min_cases: int) -> list[str]:
        """Which targets are missed: overall, and in each language with at least ``min_cases``."""
        out = []
        scopes: list[str | None] = [None, *self.languages]
        for lang in scopes:
            name = lang or "overall"
            if lang is None or self.violating[lang] >= min_cases:
                if self.recall(lang) < min_recall:
                    out.append(f"{name}: recall {self.recall(lang):.3f} < {min_recall}")
            if lang is None or self.benign[lang] >= min_cases:
                if self.false_block_rate(lang) > max_false_block:
                    out.append(
                        f"{name}: false-block rate {self.false_block_rate(lang):.3f} > {max_false_block}"
                    )
        return out

    def table(self) -> str:
        lines = [f"{'lang':6} {'violating':>9} {'recall':>7} {'benign':>7} {'false-block':>11}"]
        for lang in [*self.languages, None]:
            lines.append(
                f"{lang or 'all':6} {self.violating[lang] if lang else sum(self.violating.values()):>9} "
                f"{self.recall(lang):>7.3f} {self.benign[lang] if lang else sum(self.benign.values()):>7} "
                f"{self.false_block_rate(lang):>11.3f}"
            )
        return "\n".join(lines)

    def describe(self, max_examples: int = 20) -> str:
        """Failure counts per language and kind, and up to ``max_examples`` failing cases of each sort."""
        parts = []
        for title, cases in (
            ("missed (violating, not blocked)", self.missed),
            ("false blocks", self.false_blocks),
        ):
            if not cases:
                continue
            counts = Counter((c.lang, c.kind) for c in cases)
            parts.append(f"{title}: {len(cases)}")
            parts += [f"  {lang}/{kind or '-'}: {n}" for (lang, kind), n in sorted(counts.items())]
            parts += [
                f"    [{c.lang}/{c.kind}] {c.text!r} negative={c.negative!r}" for c in cases[:max_examples]
            ]
        return "\n".join(parts)


def evaluate(policy: PromptPolicy, cases: Iterable[Case]) -> Report:
    report = Report()
    for case in cases:
        blocked = policy.check(case.text, case.negative).blocked
        if case.violating:
            report.violating[case.lang] += 1
            if not blocked:
                report.missed.append(case)
        else:
            report.benign[case.lang] += 1
            if blocked:
                report.false_blocks.append(case)
    return report
