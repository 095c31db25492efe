"""Tier 1: deterministic domain rules.

A domain pack (see ``domains/``) lists rules; each rule has a ``kind`` that
selects one implementation in this package, parameterised by pack data:

==================== ==============================
kind                 module
==================== ==============================
pattern              ``text``
required_when        ``text``
numeric_bound        ``numeric_bound``
pair_conflict        ``pair_conflict``
pii                  ``pii``
citation_grounding   ``citation``
rl_bounds, rl_reward ``rl``
output_shape         ``output_shape``
==================== ==============================

Regexes are compiled once, when the pack is validated, so
``evaluate_rules`` only scans text. Findings never quote the trace: messages
come from the pack (or its tables) and evidence is reported as offsets.
"""

from __future__ import annotations

from evaluators.rules.base import RuleTimeout, TraceScan
from evaluators.rules.pack import RULE_KINDS, Alerts, DomainPack, Escalation, RubricCriterion, Rule
from evaluators.types import Finding, NormalisedTrace, Severity, Tier1Result

__all__ = [
    "RULE_KINDS",
    "Alerts",
    "DomainPack",
    "Escalation",
    "RubricCriterion",
    "Rule",
    "evaluate_rules",
    "rule_timeout_finding",
]


def rule_timeout_finding(rule_id: str) -> Finding:
    """A rule that ran out of time is skipped for this trace, and says so.

    Medium, not low: the trace was not fully checked, so it must not pass as
    quietly as a clean one (medium sends it on to the judge where one is
    configured).
    """
    return Finding(
        rule_id="engine.rule_timeout",
        category="engine",
        severity=Severity.MEDIUM,
        message=f"Rule {rule_id} exceeded its time limit on this trace and was skipped",
    )


def evaluate_rules(trace: NormalisedTrace, pack: DomainPack) -> Tier1Result:
    """Run every rule of ``pack`` on ``trace`` (pure; no I/O)."""
    scan = TraceScan(trace, pack.literal_scanner)
    findings: list[Finding] = []
    for rule in pack.rules:
        scan.start_rule()
        try:
            findings.extend(rule.evaluate(scan))
        except RuleTimeout:
            findings.append(rule_timeout_finding(rule.id))
    return Tier1Result(
        findings=findings,
        rules_evaluated=len(pack.rules),
        max_severity=Severity.max_of(finding.severity for finding in findings),
    )
