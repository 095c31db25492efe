"""Deleting workflow histories when their data is deleted.

A workflow's history holds its inputs and results (trace text, unless
payloads are encrypted), so deleting a trace or an organisation deletes the
matching workflow executions too: the server terminates a running one and
drops its history. When Temporal cannot be reached, the data is still
deleted in PostgreSQL (a running workflow stops by itself once its trace is
gone) and the histories expire with the namespace's retention.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from temporalio.api.batch.v1 import BatchOperationDeletion
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest, StartBatchOperationRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core import search_attributes
from core.settings import Settings
from models.schemas import workflow_id_for

log = logging.getLogger(__name__)

IDENTITY = "aegis-data-deletion"


def _timeout(settings: Settings) -> dt.timedelta:
    return dt.timedelta(seconds=settings.temporal_rpc_timeout_seconds)


async def delete_trace_workflows(
    client: Client, settings: Settings, trace_id: uuid.UUID, versions: int
) -> bool:
    """Delete the workflow of every evaluation version of a trace.

    True when Temporal took every request (a workflow that never existed or
    is already gone counts as deleted).
    """
    deleted = True
    for version in range(1, versions + 1):
        request = DeleteWorkflowExecutionRequest(
            namespace=settings.temporal_namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id_for(trace_id, version)),
        )
        try:
            await client.workflow_service.delete_workflow_execution(request, timeout=_timeout(settings))
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                log.warning(
                    "workflow deletion for trace %s v%d failed: %s", trace_id, version, exc.status.name
                )
                deleted = False
    return deleted


async def start_organization_workflow_deletion(
    client: Client, settings: Settings, organization_id: uuid.UUID
) -> str | None:
    """Start a server-side batch job deleting every workflow of an organisation.

    Returns the batch job's id, or None when Temporal did not take it. The
    organisation id is a search attribute of every Aegis workflow, so the
    server finds them itself, however many there are.
    """
    job_id = f"aegis-purge-{organization_id}-{uuid.uuid4().hex[:8]}"
    request = StartBatchOperationRequest(
        namespace=settings.temporal_namespace,
        visibility_query=f"{search_attributes.ORGANIZATION.name} = '{organization_id}'",
        job_id=job_id,
        reason="organisation data purge",
        deletion_operation=BatchOperationDeletion(identity=IDENTITY),
    )
    try:
        await client.workflow_service.start_batch_operation(request, timeout=_timeout(settings))
    except RPCError as exc:
        log.warning(
            "workflow batch deletion for organisation %s failed: %s", organization_id, exc.status.name
        )
        return None
    return job_id
