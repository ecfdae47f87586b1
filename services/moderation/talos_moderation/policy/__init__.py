"""The prompt hard limit: normalisation, the versioned rule file and the two-context rule."""

from talos_moderation.policy.checker import (
    MINOR_SEXUAL,
    NONE,
    POLICY_UNAVAILABLE,
    PROMPT_TOO_LONG,
    PromptPolicy,
    Verdict,
)
from talos_moderation.policy.rules import Rules, RulesError

__all__ = [
    "MINOR_SEXUAL",
    "NONE",
    "POLICY_UNAVAILABLE",
    "PROMPT_TOO_LONG",
    "PromptPolicy",
    "Rules",
    "RulesError",
    "Verdict",
]
