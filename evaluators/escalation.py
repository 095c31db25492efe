"""Escalation policy: which tier runs next, given what the cheaper tiers said.

Pure and deterministic, so the workflow can call it directly. Tiers run
cheapest first; a tier that settles the verdict stops the climb, and a tier
that is not configured passes the question up unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from evaluators.types import Severity

# Tier names in the order they run.
SANITISE, RULES, CLASSIFIER, JUDGE, EXPERT = "sanitise", "rules", "classifier", "judge", "expert"
TIER_NAMES = (SANITISE, RULES, CLASSIFIER, JUDGE, EXPERT)


class Outcome(Protocol):
    tier: int
    status: str
    severity: Severity
    settled: bool


def next_tier(outcomes: Sequence[Outcome]) -> int | None:
    """Index of the next tier to run, or None when the verdict is settled."""
    if not outcomes:
        return 0
    last = outcomes[-1]
    if last.settled or last.tier >= len(TIER_NAMES) - 1:
        return None
    return last.tier + 1
