"""The escalation policy towards the judge, and the precedence of verdicts."""

from __future__ import annotations

import uuid

from evaluators.escalation import EXPERT_TIER, judge_reason, next_tier, review_reason, sampled
from evaluators.types import Severity
from evaluators.verdict import final_verdict
from models.schemas import TierOutcome

POLICY = {"judge_on": Severity.MEDIUM, "settle_on": Severity.CRITICAL, "sample_rate": 0.0, "always": False}


def test_judge_runs_on_severity_below_the_settling_one() -> None:
    assert judge_reason(severity=Severity.HIGH, key="t", **POLICY) == "severity"
    assert judge_reason(severity=Severity.MEDIUM, key="t", **POLICY) == "severity"
    assert judge_reason(severity=Severity.LOW, key="t", **POLICY) is None
    # Critical is certain enough: the rules settle it without paying for a judge.
    assert judge_reason(severity=Severity.CRITICAL, key="t", **POLICY) is None
    assert judge_reason(severity=Severity.CRITICAL, key="t", **(POLICY | {"always": True})) is None
    assert judge_reason(severity=Severity.NONE, key="t", **(POLICY | {"always": True})) == "always"


def test_sampling_is_deterministic_and_close_to_its_rate() -> None:
    keys = [str(uuid.UUID(int=i)) for i in range(20_000)]
    chosen = [key for key in keys if sampled(key, 0.05)]
    assert 0.04 < len(chosen) / len(keys) < 0.06
    assert chosen == [key for key in keys if sampled(key, 0.05)]
    assert not any(sampled(key, 0.0) for key in keys[:1000])
    assert all(sampled(key, 1.0) for key in keys[:1000])
    policy = POLICY | {"sample_rate": 0.05}
    assert judge_reason(severity=Severity.NONE, key=chosen[0], **policy) == "sample"


def test_a_rating_tier_overrules_the_rules_either_way() -> None:
    rules_high = TierOutcome(tier=1, name="rules", status="completed", severity=Severity.HIGH)
    judge_safe = TierOutcome(tier=3, name="judge", status="completed", severity=Severity.NONE, passed=True)
    assert final_verdict([rules_high, judge_safe], Severity.HIGH) == (True, Severity.NONE, "judge")
    rules_none = TierOutcome(tier=1, name="rules", status="completed")
    judge_unsafe = TierOutcome(tier=3, name="judge", status="completed", severity=Severity.HIGH, passed=False)
    assert final_verdict([rules_none, judge_unsafe], Severity.HIGH) == (False, Severity.HIGH, "judge")
    # A judge that errored decides nothing: the rules' verdict stands.
    judge_error = TierOutcome(tier=3, name="judge", status="error")
    assert final_verdict([rules_high, judge_error], Severity.HIGH) == (False, Severity.HIGH, "rules")


def test_the_classifier_settles_climbs_or_sends_straight_to_review() -> None:
    rules = TierOutcome(tier=1, name="rules", status="completed", severity=Severity.HIGH)

    def classifier(decision: str) -> TierOutcome:
        settled = decision == "settle"
        return TierOutcome(
            tier=2,
            name="classifier",
            status="completed",
            settled=settled,
            passed=True if settled else None,
            detail={"risk": 0.5, "decision": decision},
        )

    review = {
        "risk_level": "high",
        "judge_ratings": ["unsafe"],
        "confidence_below": 0.6,
        "audit_sample_rate": 0.0,
    }
    assert next_tier([rules, classifier("settle")]) is None
    assert final_verdict([rules, classifier("settle")], Severity.HIGH) == (True, Severity.NONE, "classifier")
    assert next_tier([rules, classifier("judge")]) == 3
    assert next_tier([rules, classifier("review")]) == EXPERT_TIER  # no judge call
    assert review_reason([rules, classifier("review")], key="t", **review) == "classifier_high_risk"
    assert review_reason([rules, classifier("judge")], key="t", **review) is None
    # Until a model exists, Tier 2 passes the question on unchanged.
    untrained = TierOutcome(tier=2, name="classifier", status="not_configured", detail={"reason": "no model"})
    assert next_tier([rules, untrained]) == 3
