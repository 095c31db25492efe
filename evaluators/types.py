"""Data models shared by the evaluation tiers.

Everything here is plain data: no I/O, no framework imports, so these models
can travel through workflow histories and logs. Findings carry offsets, never
quoted trace text, because trace text may contain personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum, StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_SEVERITY_RANKS: dict[str, int] = {
    "none": 0,
    "low": 1,
    "medium": 2,
    "high": 3,
    "critical": 4,
}


class Severity(StrEnum):
    """Ordered severity of a finding.

    Comparison operators use the rank, not the string value: a plain ``str``
    enum would otherwise compare alphabetically ("critical" < "high").
    """

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANKS[self.value]

    @classmethod
    def max_of(cls, severities: Iterable[Severity | str]) -> Severity:
        """Highest severity in ``severities``; ``NONE`` when it is empty."""
        best = cls.NONE
        for item in severities:
            severity = cls(item)
            if severity.rank > best.rank:
                best = severity
        return best

    @staticmethod
    def _rank_of(other: object) -> int | None:
        if isinstance(other, Severity):
            return other.rank
        if isinstance(other, str) and other in _SEVERITY_RANKS:
            return _SEVERITY_RANKS[other]
        return None

    def __lt__(self, other: object) -> bool:
        rank = self._rank_of(other)
        if rank is None:
            return NotImplemented
        return self.rank < rank

    def __le__(self, other: object) -> bool:
        rank = self._rank_of(other)
        if rank is None:
            return NotImplemented
        return self.rank <= rank

    def __gt__(self, other: object) -> bool:
        rank = self._rank_of(other)
        if rank is None:
            return NotImplemented
        return self.rank > rank

    def __ge__(self, other: object) -> bool:
        rank = self._rank_of(other)
        if rank is None:
            return NotImplemented
        return self.rank >= rank

    # Defining ordering methods must not drop the str/Enum hash.
    __hash__ = Enum.__hash__


class Span(BaseModel):
    """Evidence location: character offsets into the normalised text."""

    model_config = ConfigDict(frozen=True)

    field: Literal["input", "output"]
    start: int
    end: int


class Finding(BaseModel):
    """One problem reported by a tier.

    ``message`` is generic rule text and must never contain any part of the
    trace; evidence is given only as ``spans``.
    """

    model_config = ConfigDict(frozen=True)

    rule_id: str
    category: str
    severity: Severity
    message: str
    spans: list[Span] = Field(default_factory=list)


class NormalisedTrace(BaseModel):
    """Input and output text after Tier 0 normalisation (not redacted)."""

    model_config = ConfigDict(frozen=True)

    input: str
    output: str


class Tier0Result(BaseModel):
    """Outcome of Tier 0: basic validity, quality signals and redacted copies."""

    model_config = ConfigDict(frozen=True)

    valid: bool
    findings: list[Finding]
    redacted_input: str
    redacted_output: str
    # PII kind -> number of matches over input and output; kinds with no
    # matches are omitted.
    pii_counts: dict[str, int]


class Tier1Result(BaseModel):
    """Outcome of Tier 1: findings from the domain pack's rules."""

    model_config = ConfigDict(frozen=True)

    findings: list[Finding]
    rules_evaluated: int
    max_severity: Severity
