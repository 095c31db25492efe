"""The domain pack model (format: ``domains/README.md``).

``DomainPack`` validates one pack's own data and compiles its rules; it does
not follow ``extends``. ``domains.parse_domain_pack`` and
``domains.load_domain_pack`` resolve inheritance and turn validation errors
into ``PackError`` with key paths.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from evaluators.escalation import JudgeReason, judge_reason
from evaluators.rules.base import RULE_ID_PATTERN, RuleSeverity, pack_error
from evaluators.rules.citation import CitationGroundingRule
from evaluators.rules.numeric_bound import NumericBoundRule
from evaluators.rules.output_shape import OutputShapeRule
from evaluators.rules.pair_conflict import PairConflictRule
from evaluators.rules.pii import PiiRule
from evaluators.rules.prefilter import LiteralScanner, PartRoutes
from evaluators.rules.regexes import PackRegex
from evaluators.rules.rl import RlBoundsRule, RlRewardRule
from evaluators.rules.text import PatternRule, RequiredWhenRule
from evaluators.types import Severity

PACK_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"

Rule = Annotated[
    PatternRule
    | RequiredWhenRule
    | NumericBoundRule
    | PairConflictRule
    | PiiRule
    | CitationGroundingRule
    | RlBoundsRule
    | RlRewardRule
    | OutputShapeRule,
    Field(discriminator="kind"),
]

RULE_KINDS: tuple[str, ...] = (
    "pattern",
    "required_when",
    "numeric_bound",
    "pair_conflict",
    "pii",
    "citation_grounding",
    "rl_bounds",
    "rl_reward",
    "output_shape",
)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Escalation(_Section):
    """When a trace climbs to Tiers 2, 3 and 4."""

    # Tier 3 runs when Tier 1's worst finding reaches judge_on_severity (and
    # stays below settle_on_severity, which decides without a judge), for a
    # deterministic sample of the rest, or always.
    judge_on_severity: RuleSeverity = Severity.MEDIUM
    judge_sample_rate: float = Field(default=0.0, ge=0, le=1)
    judge_always: bool = False
    settle_on_severity: RuleSeverity = Severity.CRITICAL
    classifier_settle_below: float = Field(default=0.15, ge=0, le=1)
    classifier_review_above: float = Field(default=0.85, ge=0, le=1)
    # A newly trained Tier 2 model is promoted only if, on held-out traces,
    # it leaves at least this share of the unsafe ones unsettled.
    classifier_recall_floor: float = Field(default=0.95, ge=0, le=1)
    # With a promoted Tier 2 model, the traces the rules would pass go to it
    # too: it settles most of them as a pass and sends the risky ones on, so
    # an unsafe answer the rules miss can still be caught. Costs one model
    # lookup per rules pass; off by default.
    classifier_screens_rule_passes: bool = False
    review_judge_ratings: list[str] = Field(default_factory=lambda: ["unsafe"])
    review_confidence_below: float = Field(default=0.6, ge=0, le=1)
    # Human review costs money: a pack opts in to sampling.
    audit_sample_rate: float = Field(default=0.0, ge=0, le=1)
    review_deadline_hours: float = Field(default=72, gt=0, le=24 * 365)

    def judge_reason(self, severity: Severity, key: str) -> JudgeReason | None:
        """Why Tier 1's worst finding ``severity`` sends the trace on (``key``:
        its id, for the sample), or None to settle it at Tier 1."""
        return judge_reason(
            severity=severity,
            judge_on=self.judge_on_severity,
            settle_on=self.settle_on_severity,
            sample_rate=self.judge_sample_rate,
            always=self.judge_always,
            key=key,
        )

    @model_validator(mode="after")
    def _ordered(self) -> Escalation:
        if self.classifier_settle_below > self.classifier_review_above:
            raise pack_error("classifier_settle_below", "must not be above classifier_review_above")
        return self


class RubricCriterion(_Section):
    id: str = Field(min_length=1, max_length=128, pattern=RULE_ID_PATTERN)
    description: str = Field(min_length=1, max_length=1000)
    weight: float = Field(default=1.0, gt=0, le=100, allow_inf_nan=False)


class Alerts(_Section):
    severities: list[RuleSeverity] = Field(default_factory=lambda: [Severity.CRITICAL])


class DomainPack(_Section):
    """A validated domain pack with its rules compiled.

    After ``domains`` has resolved ``extends``, ``rules`` holds the inherited
    rules first (a rule with the same id replaced in place) and the keys the
    pack left out are the parent's. A trace fails when its worst finding is
    >= ``pass_threshold``; deciding that is up to the caller.
    """

    name: str = Field(pattern=PACK_NAME_PATTERN)
    version: int = Field(ge=1, strict=True)
    display_name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    risk_level: Literal["low", "medium", "high", "critical"] = "medium"
    regulatory_frameworks: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list
    )
    extends: str | None = Field(default=None, pattern=PACK_NAME_PATTERN)
    pass_threshold: RuleSeverity = Severity.HIGH
    escalation: Escalation = Field(default_factory=Escalation)
    rubric: list[RubricCriterion] = Field(default_factory=list)
    alerts: Alerts = Field(default_factory=Alerts)
    rules: list[Rule] = Field(default_factory=list)

    _fingerprint: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique_ids(self) -> DomainPack:
        for key, items in (("rules", self.rules), ("rubric", self.rubric)):
            seen: set[str] = set()
            for index, item in enumerate(items):
                if item.id in seen:
                    raise pack_error(f"{key}[{index}].id", f"duplicate id {item.id!r}")
                seen.add(item.id)
        return self

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical JSON of the pack: equal for packs
        with equal content, whatever their YAML layout or key order."""
        if self._fingerprint is None:
            canonical = json.dumps(
                self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )
            self._fingerprint = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return self._fingerprint

    @cached_property
    def literal_scanner(self) -> LiteralScanner:
        """One scanner for every substring the pack's regex prefilters ask
        about, so that Tier 1 finds them all in one pass over a text.

        Rules keep their compiled regexes in their instance dict (cached
        properties); a regex missed here still works, by a search of its own.
        """
        literals: set[str] = set()
        routes: list[PartRoutes] = []
        seen: set[int] = set()
        for rule in self.rules:
            for value in vars(rule).values():
                for item in value if isinstance(value, list | tuple) else (value,):
                    if isinstance(item, PackRegex):
                        for pack_regex in item.with_inner():
                            # Rules that use the same pattern share one PackRegex.
                            if id(pack_regex) not in seen:
                                seen.add(id(pack_regex))
                                literals |= pack_regex.substring_literals()
                                routes.append(pack_regex.routes())
        return LiteralScanner(literals, routes)
