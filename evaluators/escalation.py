"""Escalation policy: which tier runs next, given what the cheaper tiers said.

Pure and deterministic, so the workflow can call it directly. Tiers run
cheapest first; a tier that settles the verdict stops the climb, and a tier
that is not configured passes the question up unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from evaluators.types import Severity

JudgeReason = Literal["always", "severity", "sample"]
ReviewReason = Literal[
    "judge_rating",
    "judge_low_confidence",
    "judge_recommended",
    "classifier_high_risk",
    "critical_finding",
    "audit_sample",
]
HIGH_RISK_LEVELS = frozenset({"high", "critical"})

# Tier names in the order they run.
SANITISE, RULES, CLASSIFIER, JUDGE, EXPERT = "sanitise", "rules", "classifier", "judge", "expert"
TIER_NAMES = (SANITISE, RULES, CLASSIFIER, JUDGE, EXPERT)
# The expert tier is not an activity: the workflow waits for labels itself.
EXPERT_TIER = TIER_NAMES.index(EXPERT)
RULES_TIER = TIER_NAMES.index(RULES)
CLASSIFIER_TIER = TIER_NAMES.index(CLASSIFIER)
JUDGE_TIER = TIER_NAMES.index(JUDGE)


# Why Tier 1 sends on a trace it would pass: the pack has the promoted Tier 2
# model look at rules passes too (``classifier_screens_rule_passes``).
CLASSIFIER_SCREEN = "classifier_screen"


class Outcome(Protocol):
    tier: int
    status: str
    severity: Severity
    settled: bool
    passed: bool | None  # set by tiers that rate the whole trace
    detail: Mapping[str, Any]


def next_tier(outcomes: Sequence[Outcome]) -> int | None:
    """Index of the next tier to run, or None when the verdict is settled."""
    if not outcomes:
        return 0
    last = outcomes[-1]
    if last.settled or last.tier >= len(TIER_NAMES) - 1:
        return None
    if last.tier == CLASSIFIER_TIER and last.detail.get("decision") == "review":
        return EXPERT_TIER  # high risk: straight to an expert, no judge
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


def review_reason(
    outcomes: Sequence[Outcome],
    *,
    risk_level: str,
    judge_ratings: Sequence[str],
    confidence_below: float,
    audit_sample_rate: float,
    key: str,
) -> ReviewReason | None:
    """Why an expert should review a trace once the automated tiers are done,
    or None: the judge rated it one of ``judge_ratings``, was less confident
    than ``confidence_below`` or asked for review; the classifier found it
    too risky to ask the judge at all; a tier found a critical
    issue in a high-risk domain; or the trace is in the pack's audit sample
    (deterministic by ``key``, independent of the judge's sample)."""
    judge = next((o for o in outcomes if o.tier == JUDGE_TIER and o.status == "completed"), None)
    if judge is not None:
        if judge.detail.get("rating") in judge_ratings:
            return "judge_rating"
        confidence = judge.detail.get("confidence")
        if isinstance(confidence, int | float) and confidence < confidence_below:
            return "judge_low_confidence"
        if judge.detail.get("review_recommended") is True:
            return "judge_recommended"
    classifier = next((o for o in outcomes if o.tier == CLASSIFIER_TIER and o.status == "completed"), None)
    if classifier is not None and classifier.detail.get("decision") == "review":
        return "classifier_high_risk"
    if risk_level in HIGH_RISK_LEVELS and any(
        o.severity >= Severity.CRITICAL for o in outcomes if o.status == "completed"
    ):
        return "critical_finding"
    if sampled(f"{key}:review", audit_sample_rate):
        return "audit_sample"
    return None
