"""For operators: evaluations that are stuck, with their last error and a link to the workflow."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS
from core.settings import workflow_url
from models.schemas import TraceStatus, workflow_id_for
from models.tables import JudgeCall, Trace

router = APIRouter(tags=["operations"], responses=AUTHENTICATED_ERRORS)

RUNNING = (TraceStatus.PENDING_DISPATCH, TraceStatus.QUEUED, TraceStatus.EVALUATING, TraceStatus.RETRYING)


class StuckEvaluation(BaseModel):
    trace_id: uuid.UUID
    domain: str
    status: TraceStatus
    version: int
    since: dt.datetime = Field(description="When the trace's status last changed.")
    age_seconds: float
    last_error_kind: str | None
    last_error: str | None
    attempts: int
    workflow_id: str
    workflow_url: str | None


@router.get("/stuck-evaluations", response_model=list[StuckEvaluation])
async def stuck_evaluations(
    caller: CurrentCaller,
    session: Session,
    resources: Resources,
    older_than_minutes: Annotated[float, Query(gt=0, le=60 * 24 * 365)] = 15,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[StuckEvaluation]:
    """Evaluations still running after ``older_than_minutes`` (since their last
    status change), and every one retrying a provider, oldest first."""
    now = await session.scalar(select(func.now()))
    assert now is not None
    cutoff = now - dt.timedelta(minutes=older_than_minutes)
    traces = list(
        await session.scalars(
            select(Trace)
            .where(
                Trace.organization_id == caller.organization_id,
                Trace.status.in_([status.value for status in RUNNING]),
                or_(Trace.updated_at < cutoff, Trace.status == TraceStatus.RETRYING.value),
            )
            .order_by(Trace.updated_at)
            .limit(limit)
        )
    )
    errors: dict[uuid.UUID, tuple[str | None, str | None, int]] = {}
    if traces:
        ranked = (
            select(
                JudgeCall.trace_id,
                JudgeCall.error_kind,
                JudgeCall.error,
                JudgeCall.attempt,
                func.row_number()
                .over(
                    partition_by=JudgeCall.trace_id,
                    order_by=(JudgeCall.evaluation_version.desc(), JudgeCall.attempt.desc()),
                )
                .label("rank"),
            )
            .where(JudgeCall.trace_id.in_([trace.id for trace in traces]))
            .subquery()
        )
        latest = select(ranked.c.trace_id, ranked.c.error_kind, ranked.c.error, ranked.c.attempt).where(
            ranked.c.rank == 1
        )
        for trace_id, kind, error, attempt in await session.execute(latest):
            errors[trace_id] = (kind, error, attempt)
    items = []
    for trace in traces:
        kind, error, attempts = errors.get(trace.id, (None, None, 0))
        workflow_id = workflow_id_for(trace.id, trace.evaluation_version)
        items.append(
            StuckEvaluation(
                trace_id=trace.id,
                domain=trace.domain,
                status=TraceStatus(trace.status),
                version=trace.evaluation_version,
                since=trace.updated_at,
                age_seconds=round((now - trace.updated_at).total_seconds(), 1),
                last_error_kind=kind,
                last_error=error,
                attempts=attempts,
                workflow_id=workflow_id,
                workflow_url=workflow_url(resources.settings, workflow_id),
            )
        )
    return items
