"""Evaluation results."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import CurrentCaller, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses
from api.pagination import MAX_PAGE_SIZE, paginate, split_page, within
from api.routes.traces import load_trace
from evaluators.types import Severity
from models.schemas import (
    MAX_INT32,
    EvaluationOut,
    FinalVerdict,
    IssueOut,
    JudgeCallOut,
    LabelOut,
    Page,
    ReviewOut,
    TraceStatus,
    VerdictChangeOut,
    workflow_id_for,
)
from models.tables import (
    EvaluationIssue,
    EvaluationResult,
    ExpertLabel,
    JudgeCall,
    ReviewRequest,
    Trace,
    VerdictChange,
)

router = APIRouter(tags=["evaluations"], responses=AUTHENTICATED_ERRORS)


def _judge_call_out(call: JudgeCall) -> JudgeCallOut:
    return JudgeCallOut(
        attempt=call.attempt,
        provider=call.provider,
        model=call.model,
        prompt=call.prompt,
        exchanges=call.exchanges,
        verdict=call.verdict,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cost_usd=float(call.cost_usd) if call.cost_usd is not None else None,
        latency_ms=call.latency_ms,
        error_kind=call.error_kind,
        error=call.error,
        created_at=call.created_at,
    )


def _evaluation_out(
    trace: Trace,
    result: EvaluationResult | None,
    issues: list[EvaluationIssue],
    *,
    version: int | None = None,
    versions: list[int] | None = None,
    judge_calls: list[JudgeCall] | None = None,
) -> EvaluationOut:
    shown = result.version if result is not None else (version or trace.evaluation_version)
    out = EvaluationOut(
        trace_id=trace.id,
        status=TraceStatus(trace.status),
        domain=trace.domain,
        version=shown,
        versions=versions or [],
        judge_calls=[_judge_call_out(call) for call in judge_calls or []],
        workflow_id=workflow_id_for(trace.id, shown),
        evaluated_at=trace.evaluated_at,
    )
    if result is not None:
        out.passed = result.passed
        out.severity = Severity(result.severity)
        out.decided_by = result.decided_by
        out.pack_name = result.pack_name
        out.pack_version = result.pack_version
        out.tiers = result.tiers
        out.issues = [
            IssueOut(
                tier=i.tier,
                rule_id=i.rule_id,
                category=i.category,
                severity=Severity(i.severity),
                message=i.message,
                spans=i.spans,
            )
            for i in issues
        ]
    return out


@router.get("/evaluations/{trace_id}", response_model=EvaluationOut, responses=error_responses(404))
async def get_evaluation(
    trace_id: uuid.UUID,
    caller: CurrentCaller,
    session: Session,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_INT32, description="A finished version; default: latest.")
    ] = None,
) -> EvaluationOut:
    """The evaluation of one trace, with every judge call made for it.

    ``passed`` stays null until a result exists. While a re-evaluation runs,
    the latest finished version is shown and ``status`` says what runs now.
    """
    trace = await load_trace(session, caller, trace_id)
    results = {
        result.version: result
        for result in await session.scalars(
            select(EvaluationResult).where(EvaluationResult.trace_id == trace.id)
        )
    }
    if version is None:
        result = next((r for r in results.values() if r.current), None)
    else:
        result = results.get(version)
        if result is None and version != trace.evaluation_version:
            raise ApiError(404, "version_not_found", f"This trace has no evaluation version {version}")
    shown = result.version if result is not None else (version or trace.evaluation_version)
    issues = list(
        await session.scalars(
            select(EvaluationIssue)
            .where(EvaluationIssue.trace_id == trace.id, EvaluationIssue.version == shown)
            .order_by(EvaluationIssue.tier, EvaluationIssue.ordinal)
        )
    )
    # The calls of the version shown, or of the one running when none finished.
    calls = list(
        await session.scalars(
            select(JudgeCall)
            .where(JudgeCall.trace_id == trace.id, JudgeCall.evaluation_version == shown)
            .order_by(JudgeCall.attempt)
        )
    )
    out = _evaluation_out(trace, result, issues, version=shown, versions=sorted(results), judge_calls=calls)
    await _add_review(session, trace.id, shown, out)
    return out


async def _add_review(session: Session, trace_id: uuid.UUID, version: int, out: EvaluationOut) -> None:
    """The review request, labels and verdict history of one evaluation version."""
    review = await session.scalar(
        select(ReviewRequest).where(ReviewRequest.trace_id == trace_id, ReviewRequest.version == version)
    )
    if review is not None:
        out.review = ReviewOut(
            status=review.status,
            reason=review.reason,
            deadline=review.deadline,
            claimed_by=review.claimed_by,
            created_at=review.created_at,
            resolved_at=review.resolved_at,
        )
    labels = await session.scalars(
        select(ExpertLabel)
        .where(ExpertLabel.trace_id == trace_id, ExpertLabel.version == version)
        .order_by(ExpertLabel.created_at, ExpertLabel.id)
    )
    out.labels = [
        LabelOut(
            label_id=label.id,
            version=label.version,
            verdict=label.verdict,
            severity=Severity(label.severity),
            issues=label.issues,
            notes=label.notes,
            reviewer=label.reviewer,
            source=label.source,
            created_at=label.created_at,
        )
        for label in labels
    ]
    out.disagreement = len({label.verdict for label in out.labels}) > 1
    changes = await session.scalars(
        select(VerdictChange)
        .where(VerdictChange.trace_id == trace_id, VerdictChange.version == version)
        .order_by(VerdictChange.created_at, VerdictChange.id)
    )
    out.verdict_history = [
        VerdictChangeOut(
            version=change.version,
            from_verdict=None
            if change.from_passed is None
            else FinalVerdict(
                passed=change.from_passed,
                severity=Severity(change.from_severity or "none"),
                decided_by=change.from_decided_by or "",
            ),
            to_verdict=FinalVerdict(
                passed=change.to_passed,
                severity=Severity(change.to_severity),
                decided_by=change.to_decided_by,
            ),
            changed_by=change.changed_by,
            reason=change.reason,
            label_id=change.label_id,
            created_at=change.created_at,
        )
        for change in changes
    ]


@router.get("/evaluations", response_model=Page[EvaluationOut])
async def list_evaluations(
    caller: CurrentCaller,
    session: Session,
    passed: bool | None = None,
    severity: Severity | None = None,
    domain: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[EvaluationOut]:
    """Finished evaluations, newest first. Issues are included per item."""
    query = (
        select(EvaluationResult, Trace)
        .join(Trace, Trace.id == EvaluationResult.trace_id)
        .where(EvaluationResult.organization_id == caller.organization_id, EvaluationResult.current)
    )
    if passed is not None:
        query = query.where(EvaluationResult.passed == passed)
    if severity is not None:
        query = query.where(EvaluationResult.severity == severity.value)
    if domain:
        query = query.where(EvaluationResult.domain == domain)
    query = within(query, EvaluationResult.created_at, since, until)
    rows = (
        await session.execute(
            paginate(query, EvaluationResult.created_at, EvaluationResult.id, cursor, limit)
        )
    ).all()
    page, next_cursor = split_page(rows, limit, lambda row: (row[0].created_at, row[0].id))
    issues_by_trace: dict[uuid.UUID, list[EvaluationIssue]] = {}
    if page:
        found = await session.scalars(
            select(EvaluationIssue)
            .join(
                EvaluationResult,
                (EvaluationResult.trace_id == EvaluationIssue.trace_id)
                & (EvaluationResult.version == EvaluationIssue.version),
            )
            .where(EvaluationIssue.trace_id.in_([trace.id for _, trace in page]), EvaluationResult.current)
            .order_by(EvaluationIssue.tier, EvaluationIssue.ordinal)
        )
        for issue in found:
            issues_by_trace.setdefault(issue.trace_id, []).append(issue)
    items = [_evaluation_out(trace, result, issues_by_trace.get(trace.id, [])) for result, trace in page]
    return Page[EvaluationOut](items=items, next_cursor=next_cursor)
