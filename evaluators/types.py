"""Data models shared by the evaluation tiers.

Everything here is plain data: no I/O, no framework imports, so these models
can travel through workflow histories and logs. Findings carry offsets, never
quoted trace text, because trace text may contain personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum, StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

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


SpanField = Literal["input", "output", "rl_episode", "rag_contexts"]


class Span(BaseModel):
    """Evidence location, never the evidence itself.

    For ``input`` and ``output``: character offsets into the normalised text.
    For ``rl_episode``: step indices, ``end`` exclusive. For ``rag_contexts``:
    context indices, ``end`` exclusive.
    """

    model_config = ConfigDict(frozen=True)

    field: SpanField
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
    """A trace after Tier 0 normalisation (not redacted).

    ``rag_contexts`` are plain strings in the order they were sent (a context
    without text is kept as ``""`` so that indices still line up with the
    citations); ``rag_source_ids`` holds the ``id``/``source`` a context dict
    carried, or ``None``. ``rl_episode`` is passed through as sent: rules that
    read it check its shape themselves.
    """

    model_config = ConfigDict(frozen=True)

    input: str
    output: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    rag_contexts: list[str] = Field(default_factory=list)
    rag_source_ids: list[str | None] = Field(default_factory=list)
    rl_episode: dict[str, Any] | None = None

    # PII matches per field ("input"/"output") over the whole text, filled by
    # Tier 0 so that Tier 1 does not scan the same text twice.
    _pii_cache: dict[str, Any] = PrivateAttr(default_factory=dict)


class Tier0Result(BaseModel):
    """Outcome of Tier 0: validity, PII counts and redacted copies.

    ``findings`` holds only ``input.empty_output`` (an output that cannot be
    evaluated); quality checks on the output's form are Tier 1 rules.
    """

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
