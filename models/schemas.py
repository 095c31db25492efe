"""Pydantic models shared by the API, workflows and activities.

This module must stay importable inside the Temporal workflow sandbox: it
imports pydantic and the pure evaluator types, never SQLAlchemy or an SDK.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from evaluators.types import Finding, Severity

T = TypeVar("T")


class TraceStatus(StrEnum):
    PENDING_DISPATCH = "pending_dispatch"  # stored, workflow not started yet (Temporal unreachable)
    QUEUED = "queued"  # workflow started, waiting for a worker
    EVALUATING = "evaluating"
    RETRYING = "retrying"  # a provider (the judge) failed; the next attempt is scheduled
    AWAITING_REVIEW = "awaiting_review"
    COMPLETED = "completed"
    FAILED = "failed"


TRACE_STATUSES = tuple(s.value for s in TraceStatus)
FINAL_STATUSES = frozenset({TraceStatus.COMPLETED, TraceStatus.FAILED})

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
DomainName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$", to_lower=True, strip_whitespace=True)
]
# Trace text is bounded so that one request cannot exhaust memory; the request
# size limit (AEGIS_MAX_REQUEST_BYTES) is the outer bound.
TraceText = Annotated[str, StringConstraints(max_length=1_000_000)]


class _Strict(BaseModel):
    # Unknown fields are rejected so that a typo gets a 422 naming it.
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------
# Organisations and keys
# --------------------------------------------------------------------------


class OrganizationCreate(_Strict):
    name: ShortText
    email: EmailStr


class OrganizationCreated(BaseModel):
    organization_id: uuid.UUID
    name: str
    api_key: str = Field(description="Shown once; only its hash is stored.")
    api_key_prefix: str


class ApiKeyCreate(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "default"


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="Shown once; only its hash is stored.")


# --------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------


# PostgreSQL integer columns (tokens) are 32-bit.
MAX_INT32 = 2**31 - 1


def _unstorable(value: Any) -> str | None:
    """Why PostgreSQL would refuse ``value`` (text or JSON), or None.

    Text holds no NUL character; JSON no NUL, no lone surrogate and no NaN or
    infinity (which Python's JSON parser accepts). Walked without recursion:
    the depth of a client's JSON is the client's choice. The reason never
    quotes the value: it may be trace text.
    """
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character"
            if not item.isascii() and not _encodable(item):
                return "contains a lone surrogate"
        elif isinstance(item, float) and not math.isfinite(item):
            return "contains NaN or infinity"
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class TraceIn(_Strict):
    model: ShortText
    input: TraceText
    output: TraceText
    domain: DomainName
    application_type: Annotated[str, StringConstraints(max_length=64)] | None = None
    rag_contexts: list[str | dict[str, Any]] | None = Field(default=None, max_length=200)
    rl_episode: dict[str, Any] | None = None
    session_id: Annotated[str, StringConstraints(max_length=200)] | None = None
    user_id: Annotated[str, StringConstraints(max_length=200)] | None = None
    input_tokens: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None
    output_tokens: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None
    latency_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    external_id: ShortText | None = Field(
        default=None, description="Your id for this call; resubmitting it returns the same trace."
    )

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # Refused here, naming the field, rather than by the INSERT: in a batch
        # only this trace is rejected.
        problem = _unstorable(value)
        if problem:
            raise ValueError(problem)
        return value


class TraceAccepted(BaseModel):
    trace_id: uuid.UUID
    status: TraceStatus
    duplicate: bool = Field(default=False, description="True when external_id was seen before.")


class BatchIn(_Strict):
    traces: list[dict[str, Any]] = Field(min_length=1)


class BatchItemResult(BaseModel):
    index: int
    accepted: bool
    trace_id: uuid.UUID | None = None
    status: TraceStatus | None = None
    duplicate: bool = False
    errors: list[dict[str, Any]] | None = None


class BatchAccepted(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemResult]


class TraceOut(BaseModel):
    trace_id: uuid.UUID
    external_id: str | None
    model: str
    input: str
    output: str
    domain: str
    application_type: str | None
    rag_contexts: list[Any] | None
    rl_episode: dict[str, Any] | None
    session_id: str | None
    user_id: str | None
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float | None
    metadata: dict[str, Any]
    status: TraceStatus
    created_at: dt.datetime
    evaluated_at: dt.datetime | None
    evaluation_version: int
    workflow_id: str = Field(description="The Temporal workflow of the current evaluation version.")
    workflow_url: str | None = Field(description="That workflow in the Temporal UI (AEGIS_TEMPORAL_UI_URL).")


class ReevaluationAccepted(BaseModel):
    trace_id: uuid.UUID
    version: int = Field(description="The new evaluation version.")
    status: TraceStatus
    workflow_id: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null at the end.")


# --------------------------------------------------------------------------
# Evaluation: what the tiers report, and what the API returns
# --------------------------------------------------------------------------


class PackRef(BaseModel):
    """Which domain pack a trace is evaluated with, pinned for the whole workflow."""

    source: Literal["builtin", "organization"]
    name: str
    version: int


TierStatus = Literal["completed", "not_configured", "skipped", "error"]


class TierOutcome(BaseModel):
    """What one tier concluded. Carried in workflow history: never trace text."""

    tier: int
    name: str
    status: TierStatus
    severity: Severity = Severity.NONE
    settled: bool = Field(default=False, description="True when this tier decided the verdict.")
    passed: bool | None = Field(
        default=None, description="The tier's own pass/fail, for tiers that rate the whole trace (2-4)."
    )
    findings: list[Finding] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)
    duration_ms: float = 0.0
    pack: PackRef | None = Field(default=None, description="Set by Tier 0: the pack the later tiers use.")
    review: ReviewPolicy | None = Field(default=None, description="Set by Tier 0: the pack's review policy.")


class FinalVerdict(BaseModel):
    passed: bool
    severity: Severity
    decided_by: str


class StoredVerdict(FinalVerdict):
    """What persist_evaluation returns: the verdict, and whether the trace
    has alerts waiting for delivery (if not, the workflow skips that step).
    A workflow reading it as a FinalVerdict ignores the extra field; a
    result without it (from a worker of an earlier version) means "deliver"."""

    alerts_pending: bool = True


class ReviewPolicy(BaseModel):
    """What the domain pack says about expert review; set by Tier 0 with the pack."""

    risk_level: str
    judge_ratings: list[str] = Field(default_factory=list)
    confidence_below: float = 0.0
    audit_sample_rate: float = 0.0
    deadline_hours: float = 72.0


# --------------------------------------------------------------------------
# Expert labels
# --------------------------------------------------------------------------

LabelVerdict = Literal["pass", "fail"]
LabelSeverity = Literal["none", "low", "medium", "high", "critical"]


def label_severity(verdict: LabelVerdict, severity: LabelSeverity | None) -> Severity:
    """A label's severity: as given, else none for a pass and high for a fail."""
    if severity is not None:
        return Severity(severity)
    return Severity.NONE if verdict == "pass" else Severity.HIGH


class LabelIssue(_Strict):
    category: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    severity: Literal["low", "medium", "high", "critical"]
    message: Annotated[str, StringConstraints(max_length=1000)] = ""


class ExpertLabelIn(_Strict):
    """A reviewer's verdict on a trace, through the API."""

    verdict: LabelVerdict
    severity: LabelSeverity | None = Field(default=None, description="Default: none for pass, high for fail.")
    issues: list[LabelIssue] = Field(default_factory=list, max_length=50)
    notes: Annotated[str, StringConstraints(max_length=5000)] | None = None
    reviewer: ShortText

    def resolved_severity(self) -> Severity:
        return label_severity(self.verdict, self.severity)


class LabelSignal(BaseModel):
    """A label as it reaches the workflow (update or signal).

    It carries no free text: the API stores notes and issues in PostgreSQL
    first and sends the row's id; an operator's signal from the Temporal UI
    or CLI sends just these fields.
    """

    model_config = ConfigDict(extra="forbid")

    verdict: LabelVerdict
    severity: LabelSeverity | None = None
    reviewer: ShortText
    label_id: uuid.UUID | None = Field(default=None, description="Set by the API: the stored label.")

    def resolved_severity(self) -> Severity:
        return label_severity(self.verdict, self.severity)


class LabelResult(BaseModel):
    """What a label did: the final verdict after it, and whether labels disagree."""

    label_id: uuid.UUID
    verdict: FinalVerdict
    changed: bool
    labels: int
    disagreement: bool


class LabelOut(BaseModel):
    label_id: uuid.UUID
    version: int
    verdict: str
    severity: Severity
    issues: list[dict[str, Any]]
    notes: str | None
    reviewer: str
    source: str
    created_at: dt.datetime


class VerdictChangeOut(BaseModel):
    version: int
    from_verdict: FinalVerdict | None
    to_verdict: FinalVerdict
    changed_by: str
    reason: str
    label_id: uuid.UUID | None
    created_at: dt.datetime


class ReviewOut(BaseModel):
    status: str = Field(description="pending, labelled or expired.")
    reason: str
    deadline: dt.datetime
    claimed_by: str | None
    created_at: dt.datetime
    resolved_at: dt.datetime | None


class IssueOut(BaseModel):
    tier: int
    rule_id: str
    category: str
    severity: Severity
    message: str
    spans: list[dict[str, Any]]


class JudgeCallOut(BaseModel):
    """One attempt at judging: what was sent, what came back, what it cost."""

    attempt: int
    provider: str
    model: str
    prompt: dict[str, Any] = Field(description="The sanitised system and user messages sent.")
    exchanges: list[dict[str, Any]] = Field(description="Raw responses (a repair request adds one).")
    verdict: dict[str, Any] | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_ms: float
    error_kind: str | None
    error: str | None
    created_at: dt.datetime


class EvaluationOut(BaseModel):
    trace_id: uuid.UUID
    status: TraceStatus
    domain: str
    version: int | None = Field(default=None, description="Evaluation version shown; the latest by default.")
    versions: list[int] = Field(default_factory=list, description="Every finished version of this trace.")
    passed: bool | None = None
    severity: Severity | None = None
    decided_by: str | None = None
    pack_name: str | None = Field(default=None, description="Domain pack the rules ran with.")
    pack_version: int | None = None
    tiers: list[dict[str, Any]] = Field(default_factory=list)
    issues: list[IssueOut] = Field(default_factory=list)
    judge_calls: list[JudgeCallOut] = Field(default_factory=list)
    review: ReviewOut | None = None
    labels: list[LabelOut] = Field(default_factory=list, description="Every expert label, latest last.")
    verdict_history: list[VerdictChangeOut] = Field(
        default_factory=list, description="Every change of the final verdict: who, when, from, to, why."
    )
    disagreement: bool = Field(default=False, description="True when experts' labels disagree.")
    workflow_id: str
    evaluated_at: dt.datetime | None = None


# --------------------------------------------------------------------------
# Workflow and activity inputs: one model each, ids only (text stays in PostgreSQL)
# --------------------------------------------------------------------------


DEFAULT_JUDGE_TASK_QUEUE = "aegis-judge"
# Tier 2 training: its own queue, so that the workers that load scikit-learn
# to train are not the ones that evaluate.
DEFAULT_TRAINING_TASK_QUEUE = "aegis-training"


class EvaluateTraceInput(BaseModel):
    trace_id: uuid.UUID
    organization_id: uuid.UUID
    domain: str
    version: int = Field(default=1, ge=1, description="1, then +1 per re-evaluation.")
    relabel: bool = Field(
        default=False, description="Started only to apply a label to a finished evaluation."
    )
    # Where the judge activity runs: its own queue, so LLM capacity is limited
    # and scaled apart from the cheap tiers.
    judge_task_queue: str = DEFAULT_JUDGE_TASK_QUEUE


class TierInput(BaseModel):
    trace_id: uuid.UUID
    organization_id: uuid.UUID
    domain: str
    pack: PackRef | None = Field(default=None, description="Set by Tier 0; None when the domain is unknown.")
    previous: list[TierOutcome] = Field(default_factory=list)


class JudgeInput(BaseModel):
    """One attempt at Tier 3 on one evaluation version of a trace."""

    trace_id: uuid.UUID
    organization_id: uuid.UUID
    domain: str
    pack: PackRef
    version: int
    attempt: int = Field(ge=1)
    findings: list[Finding] = Field(default_factory=list, description="What Tiers 0-2 found.")
    rate_slot_reserved: bool = Field(
        default=False, description="The previous attempt waited for a slot it reserved in the org's bucket."
    )


class JudgeFailure(BaseModel):
    """Why a judge attempt failed; the details of the activity's error."""

    kind: str
    retryable: bool
    retry_after_seconds: float | None = None
    message: str


class JudgeProgress(BaseModel):
    """The judge's attempts so far, for the ``status`` query."""

    attempts: int = 0
    last_error_kind: str | None = None
    last_error: str | None = None
    next_attempt_at: dt.datetime | None = None


class ReviewRequestInfo(BaseModel):
    """Expert review the automated verdict waits for (stored with it)."""

    reason: str
    risk_level: str
    deadline: dt.datetime


class ApplyLabelInput(BaseModel):
    trace_id: uuid.UUID
    organization_id: uuid.UUID
    version: int
    label: LabelSignal
    source: Literal["api", "signal"]
    label_id: uuid.UUID = Field(description="The label's id: the API's, or one the workflow drew.")


class DeliverAlertsInput(BaseModel):
    trace_id: uuid.UUID
    organization_id: uuid.UUID


class ReviewExpiredInput(BaseModel):
    trace_id: uuid.UUID
    organization_id: uuid.UUID
    version: int


class StatusUpdateInput(BaseModel):
    trace_id: uuid.UUID
    status: TraceStatus


class PersistInput(BaseModel):
    trace_id: uuid.UUID
    organization_id: uuid.UUID
    domain: str
    workflow_id: str
    run_id: str
    version: int = 1
    pack: PackRef | None = None
    outcomes: list[TierOutcome]
    review: ReviewRequestInfo | None = Field(default=None, description="Set when an expert must review.")


class DispatchSweepInput(BaseModel):
    older_than_seconds: float = 5.0
    limit: int = 500


class DispatchSweepResult(BaseModel):
    dispatched: int
    remaining: bool


class RetentionSweepInput(BaseModel):
    batch_size: int = 1000


class RetentionSweepResult(BaseModel):
    deleted: int
    remaining: bool


class WorkflowState(BaseModel):
    """Answer of the ``status`` query."""

    trace_id: uuid.UUID
    status: TraceStatus
    current_tier: str
    outcomes: list[TierOutcome]
    verdict: FinalVerdict | None = None
    version: int = 1
    judge: JudgeProgress | None = None
    review_reason: str | None = None
    review_deadline: dt.datetime | None = None
    labels: int = 0


class TrainClassifierInput(BaseModel):
    """One training run of the Tier 2 model for an organisation's domain."""

    organization_id: uuid.UUID
    domain: str
    seed: int = 0
    held_out_share: float = Field(default=0.25, gt=0, lt=1)
    training_task_queue: str = DEFAULT_TRAINING_TASK_QUEUE


class TrainedCandidate(BaseModel):
    """What ``train_classifier`` stored: a candidate version, or why none."""

    model_id: uuid.UUID | None = None
    version: int | None = None
    reason: str | None = None
    training_size: int = 0


class RegisterClassifierInput(BaseModel):
    organization_id: uuid.UUID
    model_id: uuid.UUID


class TrainingResult(BaseModel):
    """Outcome of a training run: ``promoted``, ``kept`` (trained, not
    promoted) or ``skipped`` (not enough labels to train)."""

    status: Literal["promoted", "kept", "skipped"]
    reason: str
    model_id: uuid.UUID | None = None
    version: int | None = None
    training_size: int = 0


class TrainingSweepInput(BaseModel):
    """The schedule's run: train every organisation's domain with this many new verdicts."""

    min_new_labels: int = Field(default=20, ge=1)
    training_task_queue: str = DEFAULT_TRAINING_TASK_QUEUE


class TrainingTarget(BaseModel):
    organization_id: uuid.UUID
    domain: str


class TrainingTargets(BaseModel):
    targets: list[TrainingTarget]


def training_workflow_id(organization_id: uuid.UUID, domain: str, run: uuid.UUID) -> str:
    return f"train-classifier-{organization_id}-{domain}-{run}"


def workflow_id_for(trace_id: uuid.UUID, version: int = 1) -> str:
    """``trace-<id>`` for the first evaluation, ``trace-<id>-v<n>`` for re-evaluations."""
    return f"trace-{trace_id}" if version == 1 else f"trace-{trace_id}-v{version}"
