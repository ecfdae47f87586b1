"""The held-out evaluation set: recall and false-block rate of the real packaged rules.

``eval/compose.py`` composes the violating prompts in memory from a vocabulary and reads the
benign ones from ``eval/benign.jsonl`` and the vocabulary. Two vocabularies, each written by
someone who had seen neither the rule files nor the other vocabulary: ``vocabulary/`` (the
rules were then generalised against its misses) and ``vocabulary2/`` (measured once unseen,
recall 0.867 with no false block, before a second round). Targets: recall >= 0.99 and false-block rate <= 1 %,
overall and in every language with at least 20 prompts of that sort.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from talos_moderation.policy import PromptPolicy

from .eval import compose
from .evaluation import Case, evaluate

MIN_RECALL = 0.99
MAX_FALSE_BLOCK = 0.01
MIN_CASES_PER_LANGUAGE = 20
MAX_EXAMPLES = 25


def held_out_cases(folder: Path = compose.VOCABULARY) -> list[Case]:
    return [
        *(Case(c.lang, c.text, c.negative, c.kind, True) for c in compose.violating(folder)),
        *(Case(c.lang, c.text, c.negative, c.kind, False) for c in compose.benign(folder)),
    ]


VOCABULARIES = pytest.mark.parametrize(
    "folder", [compose.VOCABULARY, compose.VOCABULARY2], ids=["vocabulary", "vocabulary2"]
)


@VOCABULARIES
def test_held_out_set_is_big_and_wide(folder: Path) -> None:
    cases = held_out_cases(folder)
    for violating in (True, False):
        side = [c for c in cases if c.violating is violating]
        per_language = Counter(c.lang for c in side)
        assert len(side) >= 600 and len(per_language) >= 25
        assert sum(1 for n in per_language.values() if n >= MIN_CASES_PER_LANGUAGE) >= 25


@VOCABULARIES
def test_held_out_set_meets_recall_and_false_block_targets(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = PromptPolicy.load(None)
    assert policy.available, policy.error
    report = evaluate(policy, held_out_cases(folder))
    with capsys.disabled():
        print(f"\nheld-out evaluation (rules {policy.version}):\n{report.table()}")
    failures = report.failures(MIN_RECALL, MAX_FALSE_BLOCK, MIN_CASES_PER_LANGUAGE)
    assert not failures, "\n".join(failures) + "\n" + report.describe(MAX_EXAMPLES)
