"""Escalation policy: which tier runs next, given what the cheaper tiers said.

Pure and deterministic, so the workflow can call it directly. Tiers run
cheapest first; a tier that settles the verdict stops the climb, and a tier
that is not configured passes the question up unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal, Protocol

from evaluators.types import Severity

JudgeReason = Literal["always", "severity", "sample"]

# Tier names in the order they run.
SANITISE, RULES, CLASSIFIER, JUDGE, EXPERT = "sanitise", "rules", "classifier", "judge", "expert"
TIER_NAMES = (SANITISE, RULES, CLASSIFIER, JUDGE, EXPERT)


class Outcome(Protocol):
    tier: int
    status: str
    severity: Severity
    settled: bool
    passed: bool | None  # set by tiers that rate the whole trace


def next_tier(outcomes: Sequence[Outcome]) -> int | None:
    """Index of the next tier to run, or None when the verdict is settled."""
    if not outcomes:
        return 0
    last = outcomes[-1]
    if last.settled or last.tier >= len(TIER_NAMES) - 1:
        return None
    return last.tier + 1


def sampled(key: str, rate: float) -> bool:
    """Deterministic sampling: the same key is always in or out of a given rate."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def judge_reason(
    *, severity: Severity, judge_on: Severity, settle_on: Severity, sample_rate: float, always: bool, key: str
) -> JudgeReason | None:
    """Why Tier 3 should see a trace after Tier 1, or None to settle it there.

    A finding at ``settle_on`` or above decides the verdict without a judge.
    """
    if severity >= settle_on:
        return None
    if always:
        return "always"
    if severity >= judge_on:
        return "severity"
    if sampled(key, sample_rate):
        return "sample"
    return None
