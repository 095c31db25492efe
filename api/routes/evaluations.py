"""Evaluation results."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import CurrentCaller, Session
from api.pagination import MAX_PAGE_SIZE, paginate, split_page, within
from api.routes.traces import load_trace
from evaluators.types import Severity
from models.schemas import EvaluationOut, IssueOut, Page, TraceStatus, workflow_id_for
from models.tables import EvaluationIssue, EvaluationResult, Trace

router = APIRouter(tags=["evaluations"])


def _evaluation_out(
    trace: Trace, result: EvaluationResult | None, issues: list[EvaluationIssue]
) -> EvaluationOut:
    out = EvaluationOut(
        trace_id=trace.id,
        status=TraceStatus(trace.status),
        domain=trace.domain,
        workflow_id=workflow_id_for(trace.id),
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


@router.get("/evaluations/{trace_id}", response_model=EvaluationOut)
async def get_evaluation(trace_id: uuid.UUID, caller: CurrentCaller, session: Session) -> EvaluationOut:
    """The evaluation of one trace. ``passed`` stays null until the status is final."""
    trace = await load_trace(session, caller, trace_id)
    result = await session.scalar(select(EvaluationResult).where(EvaluationResult.trace_id == trace.id))
    issues = list(
        await session.scalars(
            select(EvaluationIssue)
            .where(EvaluationIssue.trace_id == trace.id)
            .order_by(EvaluationIssue.tier, EvaluationIssue.ordinal)
        )
    )
    return _evaluation_out(trace, result, issues)


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
        .where(EvaluationResult.organization_id == caller.organization_id)
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
            .where(EvaluationIssue.trace_id.in_([trace.id for _, trace in page]))
            .order_by(EvaluationIssue.tier, EvaluationIssue.ordinal)
        )
        for issue in found:
            issues_by_trace.setdefault(issue.trace_id, []).append(issue)
    items = [_evaluation_out(trace, result, issues_by_trace.get(trace.id, [])) for result, trace in page]
    return Page[EvaluationOut](items=items, next_cursor=next_cursor)
