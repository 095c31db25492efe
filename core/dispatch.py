"""Starting the evaluation workflow of a stored trace.

Used by ingestion (right after the trace is committed) and by the dispatch
sweep (for traces stored while Temporal was unreachable). Starting is
idempotent: the workflow id is derived from the trace id, a running workflow
is reused and a finished one is never started twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable

from sqlalchemy import Uuid, any_, bindparam, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core import search_attributes as sa
from core.settings import Settings
from models.schemas import EvaluateTraceInput, TraceStatus, workflow_id_for
from models.tables import Trace

log = logging.getLogger(__name__)

WORKFLOW_NAME = "EvaluateTraceV2"

TRACES = Trace.__table__
# pending_dispatch -> queued for a round of started workflows. Built once,
# with the ids as one array parameter: an IN list would make a new SQL text
# (and a new prepared statement on the connection) for every round size.
_MARK_QUEUED = (
    update(TRACES)
    .where(
        TRACES.c.id == any_(bindparam("ids", type_=ARRAY(Uuid))),
        TRACES.c.status == TraceStatus.PENDING_DISPATCH.value,
    )
    .values(status=TraceStatus.QUEUED.value)
)


async def start_evaluation(
    client: Client,
    settings: Settings,
    trace_id: uuid.UUID,
    organization_id: uuid.UUID,
    domain: str,
    *,
    version: int = 1,
    rpc_timeout: dt.timedelta | None = None,
) -> bool:
    """Start (or find) the workflow of one evaluation version of a trace.

    Returns False when Temporal is unreachable.
    """
    try:
        await client.start_workflow(
            WORKFLOW_NAME,
            EvaluateTraceInput(
                trace_id=trace_id,
                organization_id=organization_id,
                domain=domain,
                version=version,
                judge_task_queue=settings.judge_task_queue,
            ),
            id=workflow_id_for(trace_id, version),
            task_queue=settings.task_queue,
            # Ids only: summaries are stored unencrypted, like search attributes.
            static_summary=f"Evaluate trace {trace_id} ({domain}), version {version}",
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=sa.starting(organization_id, domain, TraceStatus.QUEUED.value, "none"),
            rpc_timeout=rpc_timeout,
        )
    except WorkflowAlreadyStartedError:
        return True  # it ran before: nothing to do
    except Exception as exc:
        log.warning(
            "workflow start failed for trace %s: %s",
            trace_id,
            type(exc).__name__,
            extra={"trace_id": trace_id, "organization_id": organization_id},
        )
        return False
    return True


async def mark_queued(session: AsyncSession, trace_ids: Iterable[uuid.UUID]) -> None:
    """pending_dispatch -> queued, never moving a trace backwards.

    The worker may already have picked the trace up (status ``evaluating``);
    the condition on the current status keeps that.
    """
    ids = list(trace_ids)
    if not ids:
        return
    await session.execute(_MARK_QUEUED, {"ids": ids})
