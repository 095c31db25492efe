"""Rule kind ``pii``: personal data in the output (or input).

One finding per PII kind, named ``<rule id>.<kind>`` (e.g. ``pii.ssn``).
``kinds`` maps a kind to its severity; when it is given only those kinds are
reported, otherwise every kind is reported at the rule's ``severity``.
``message`` may use ``{kind}``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from evaluators.pii import PII_KINDS, PiiMatch
from evaluators.rules.base import RuleBase, RuleSeverity, TextField, TraceScan, fill, pack_error
from evaluators.types import Finding, Severity, SpanField


class PiiRule(RuleBase):
    kind: Literal["pii"]
    kinds: dict[str, RuleSeverity] | None = None
    field: Literal["output", "input", "both"] = "output"

    @field_validator("kinds", mode="before")
    @classmethod
    def _known_kinds(cls, value: object) -> object:
        if isinstance(value, dict):
            for kind in value:
                if kind not in PII_KINDS:
                    raise pack_error(str(kind), f"unknown PII kind; expected one of {', '.join(PII_KINDS)}")
        return value

    def evaluate(self, scan: TraceScan) -> list[Finding]:
        fields: tuple[TextField, ...] = ("input", "output") if self.field == "both" else (self.field,)
        by_kind: dict[str, list[tuple[SpanField, PiiMatch]]] = {}
        for field in fields:
            for match in scan.pii(field, self.max_scan_chars):
                by_kind.setdefault(match.kind, []).append((field, match))

        findings: list[Finding] = []
        for kind in PII_KINDS:  # stable order, independent of text order
            matches = by_kind.get(kind)
            if not matches:
                continue
            severity: Severity
            if self.kinds is None:
                severity = self.severity
            elif kind in self.kinds:
                severity = self.kinds[kind]
            else:
                continue
            findings.append(
                self.finding(
                    [(field, m.start, m.end) for field, m in matches],
                    rule_id=f"{self.id}.{kind}",
                    severity=severity,
                    message=fill(self.message, kind=kind),
                )
            )
        return findings
