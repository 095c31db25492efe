"""The final verdict from the tiers' outcomes.

Precedence: the most expensive tier that completed decides (expert > judge >
classifier > rules > sanitise). A tier that rates the whole trace (Tiers
2-4) gives its own pass/fail and severity; the cheaper tiers' findings stay
as evidence but do not outvote it. When only Tiers 0-1 completed, the
verdict is their highest severity against the domain's pass threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluators.escalation import TIER_NAMES, Outcome
from evaluators.types import Severity


def final_verdict(outcomes: Sequence[Outcome], pass_threshold: Severity) -> tuple[bool, Severity, str]:
    """Returns (passed, severity, decided_by)."""
    completed = [o for o in outcomes if o.status == "completed"]
    if not completed:
        raise ValueError("no tier completed: nothing to decide on")
    decider = max(completed, key=lambda o: o.tier)
    if decider.passed is not None:
        return decider.passed, decider.severity, TIER_NAMES[decider.tier]
    # Cheap tiers only add evidence: their worst finding counts while no
    # smarter tier has overruled them.
    severity = Severity.max_of(o.severity for o in completed)
    passed = severity.rank < pass_threshold.rank
    return passed, severity, TIER_NAMES[decider.tier]
