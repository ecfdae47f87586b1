"""Development cases in 33 languages (dev_cases.jsonl): the rules were written against these.

Each line says whether it must be blocked (terms, ages in each language's grammar, school
grades, puberty paraphrases, masked and look-alike spellings, abbreviations, negative-prompt
steering) or must pass (families at the beach, birthdays, adult art nudity, 'minor league',
an adult model's age, words that collide across languages). The held-out set (test_eval.py)
is the honest measure; this one keeps what was built from silently regressing.
"""

from __future__ import annotations

import pytest

from talos_moderation.policy import PromptPolicy

from .conftest import HERE
from .evaluation import evaluate, load_cases

# Known and accepted: 'nina' (Spanish niña without its tilde) is also a name, so a Spanish prompt
# about an adult named Nina is blocked. One such case is in the set.
MAX_FALSE_BLOCKS = 1


def test_dev_cases(capsys: pytest.CaptureFixture[str]) -> None:
    cases = load_cases(HERE / "dev_cases.jsonl")
    assert len({c.lang for c in cases}) >= 33
    policy = PromptPolicy.load(None)
    report = evaluate(policy, cases)
    with capsys.disabled():
        print(f"\ndevelopment cases (rules {policy.version}):\n{report.table()}")
    assert report.missed == [], report.describe()
    assert len(report.false_blocks) <= MAX_FALSE_BLOCKS, report.describe()
