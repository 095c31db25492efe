"""Expert labels: a reviewer's verdict, applied through the trace's workflow."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import delete
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses
from api.routes.traces import load_trace
from core import search_attributes as sa
from core.dispatch import WORKFLOW_NAME
from models.schemas import (
    EvaluateTraceInput,
    ExpertLabelIn,
    FinalVerdict,
    LabelResult,
    LabelSignal,
    TraceStatus,
    workflow_id_for,
)
from models.tables import ExpertLabel

router = APIRouter(tags=["reviews"], responses=AUTHENTICATED_ERRORS)
log = logging.getLogger(__name__)

LABELLABLE = {TraceStatus.AWAITING_REVIEW, TraceStatus.COMPLETED}


class LabelApplied(BaseModel):
    label_id: uuid.UUID
    verdict: FinalVerdict
    changed: bool
    labels: int
    disagreement: bool


@router.post("/traces/{trace_id}/labels", response_model=LabelApplied, responses=error_responses(404, 409))
async def label_trace(
    trace_id: uuid.UUID, body: ExpertLabelIn, caller: CurrentCaller, session: Session, resources: Resources
) -> LabelApplied:
    """An expert's label: it overrides every automated verdict and returns the new final verdict.

    While the trace awaits review the label goes to its running workflow as a
    Temporal update (validated, answered synchronously). Given later, it
    starts a short run of the same workflow id that applies it durably.
    """
    trace = await load_trace(session, caller, trace_id)
    status = TraceStatus(trace.status)
    if status not in LABELLABLE:
        raise ApiError(409, "not_evaluated", f"The trace is {status.value}; label it once it is evaluated")
    severity = body.resolved_severity()
    if body.verdict == "pass" and severity >= "high":
        raise ApiError(
            422,
            "validation_error",
            "A passing label cannot carry a high or critical severity",
            [{"field": "body.severity", "message": "must be below high when verdict is pass"}],
        )
    # Notes and issues are stored here and never travel through Temporal:
    # the workflow gets the label's id and verdict only.
    label = ExpertLabel(
        id=uuid.uuid4(),
        organization_id=caller.organization_id,
        trace_id=trace.id,
        version=trace.evaluation_version,
        verdict=body.verdict,
        severity=severity.value,
        issues=[issue.model_dump() for issue in body.issues],
        notes=body.notes,
        reviewer=body.reviewer,
        source="api",
    )
    session.add(label)
    await session.commit()
    signal = LabelSignal(
        verdict=body.verdict, severity=severity.value, reviewer=body.reviewer, label_id=label.id
    )
    settings = resources.settings
    workflow_id = workflow_id_for(trace.id, trace.evaluation_version)
    start = WithStartWorkflowOperation(
        WORKFLOW_NAME,
        EvaluateTraceInput(
            trace_id=trace.id,
            organization_id=trace.organization_id,
            domain=trace.domain,
            version=trace.evaluation_version,
            relabel=True,
            judge_task_queue=settings.judge_task_queue,
        ),
        id=workflow_id,
        task_queue=settings.task_queue,
        static_summary=f"Apply an expert label to trace {trace.id}, version {trace.evaluation_version}",
        # A running evaluation takes the label itself; a finished one is
        # followed by a short run of the same id that applies it.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=sa.starting(
            trace.organization_id, trace.domain, TraceStatus.EVALUATING.value, "expert"
        ),
    )
    try:
        result: LabelResult = await resources.temporal.execute_update_with_start_workflow(
            "submit_label",
            signal,
            start_workflow_operation=start,
            result_type=LabelResult,
            rpc_timeout=dt.timedelta(seconds=30),
        )
    except WorkflowUpdateFailedError as exc:
        await _forget(session, label.id)
        # The validator's reason: the evaluation is not waiting for a label.
        reason = str(exc.cause) if exc.cause else "the evaluation cannot take a label now"
        raise ApiError(409, "label_rejected", f"Label not applied: {reason}; try again shortly") from None
    except RPCError as exc:
        await _forget(session, label.id)
        log.warning("label for trace %s not delivered: %s", trace.id, exc.status.name)
        raise ApiError(503, "temporal_unavailable", "The label could not be delivered; try again") from None
    return LabelApplied(**result.model_dump())


async def _forget(session: Session, label_id: uuid.UUID) -> None:
    """A label the workflow did not take must not stay behind."""
    await session.execute(delete(ExpertLabel).where(ExpertLabel.id == label_id))
    await session.commit()
