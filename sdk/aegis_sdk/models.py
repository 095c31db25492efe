"""What the SDK sends and reads. Reading models keep fields a newer server adds."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# Statuses after which an evaluation's automated verdict is stored.
FINAL_STATUSES = frozenset({"completed", "awaiting_review", "failed"})


class Trace(BaseModel):
    """One LLM call to evaluate."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str
    output: str
    domain: str = "generic"
    application_type: str | None = None
    rag_contexts: list[str | dict[str, Any]] | None = None
    rl_episode: dict[str, Any] | None = None
    session_id: str | None = None
    user_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    external_id: str | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class _Read(BaseModel):
    model_config = ConfigDict(extra="allow")


class Accepted(_Read):
    trace_id: uuid.UUID
    status: str
    duplicate: bool = False


class BatchItem(_Read):
    index: int
    accepted: bool
    trace_id: uuid.UUID | None = None
    status: str | None = None
    duplicate: bool = False
    errors: list[dict[str, Any]] | None = None


class BatchAccepted(_Read):
    accepted: int
    rejected: int
    results: list[BatchItem]


class Issue(_Read):
    tier: int
    rule_id: str
    category: str
    severity: str
    message: str
    spans: list[dict[str, Any]] = Field(default_factory=list)


class Evaluation(_Read):
    trace_id: uuid.UUID
    status: str
    domain: str
    version: int | None = None
    passed: bool | None = None
    severity: str | None = None
    decided_by: str | None = None
    tiers: list[dict[str, Any]] = Field(default_factory=list)
    issues: list[Issue] = Field(default_factory=list)
    workflow_id: str | None = None
    evaluated_at: dt.datetime | None = None

    @property
    def final(self) -> bool:
        """True once the automated verdict is stored (an expert may still change it)."""
        return self.status in FINAL_STATUSES


class TraceSummary(_Read):
    trace_id: uuid.UUID
    model: str
    domain: str
    status: str
    created_at: dt.datetime


class Page(_Read, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class Verdict(_Read):
    passed: bool
    severity: str
    decided_by: str


class LabelResult(_Read):
    label_id: uuid.UUID
    verdict: Verdict
    changed: bool
    labels: int
    disagreement: bool


LabelVerdict = Literal["pass", "fail"]
