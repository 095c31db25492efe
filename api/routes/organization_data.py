"""An organisation's own data: export it all, purge it all, or say how long to keep it.

The export is NDJSON, one ``{"table": ..., "row": {...}}`` object per line,
streamed from PostgreSQL in batches so that its size does not matter. It
holds every row of every table that belongs to the organisation, except
secrets: API-key hashes, encrypted provider keys and webhook URLs, model
artefacts (binary) and internal rate-limiter state.

The purge deletes the organisation and, through the schema's cascades, every
row that belongs to it, after starting the deletion of its workflows'
histories in Temporal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python
from sqlalchemy import LargeBinary, Select, Table, delete, func, select, update

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError
from core.workflow_cleanup import start_organization_workflow_deletion
from models.tables import (
    Alert,
    AlertChannel,
    AlertDelivery,
    ApiKey,
    DomainPackVersion,
    EvaluationIssue,
    EvaluationResult,
    Event,
    ExpertLabel,
    IssueRollup,
    JudgeCall,
    JudgeConfig,
    ModelVersion,
    Organization,
    ReviewRequest,
    Trace,
    UsageMetric,
    VerdictChange,
    VerdictRollup,
)

router = APIRouter(tags=["organizations"], responses=AUTHENTICATED_ERRORS)

# Parents before children, so an importer can insert in file order.
EXPORTED = (
    Organization,
    ApiKey,
    DomainPackVersion,
    JudgeConfig,
    AlertChannel,
    ModelVersion,
    Trace,
    EvaluationResult,
    EvaluationIssue,
    JudgeCall,
    ExpertLabel,
    ReviewRequest,
    VerdictChange,
    Alert,
    AlertDelivery,
    UsageMetric,
    VerdictRollup,
    IssueRollup,
    Event,
)
# Columns never exported: secrets, and what PostgreSQL derives from other
# columns (binary columns are left out as well: encrypted values and artefacts).
UNEXPORTED_COLUMNS = frozenset({"key_hash", "search_document"})
_BATCH_ROWS = 500


def exported_columns(table: Table) -> list[Any]:
    return [
        column
        for column in table.columns
        if column.name not in UNEXPORTED_COLUMNS and not isinstance(column.type, LargeBinary)
    ]


def _rows_of(model: Any, organization_id: uuid.UUID) -> Select[Any]:
    table: Table = model.__table__
    query = select(*exported_columns(table))
    if model is Organization:
        query = query.where(table.c.id == organization_id)
    elif model is AlertDelivery:
        # Deliveries belong to the organisation through their alert.
        query = query.join(Alert, Alert.id == AlertDelivery.alert_id).where(
            Alert.organization_id == organization_id
        )
    else:
        query = query.where(table.c.organization_id == organization_id)
    return query.order_by(*table.primary_key.columns)


async def _export_lines(resources: Resources, organization_id: uuid.UUID) -> AsyncIterator[bytes]:
    # Its own session: the request's closes before a streamed body is sent.
    async with resources.session_factory() as session:
        for model in EXPORTED:
            name = model.__table__.name
            result = await session.stream(
                _rows_of(model, organization_id).execution_options(yield_per=_BATCH_ROWS)
            )
            async for batch in result.mappings().partitions():
                lines = (
                    json.dumps({"table": name, "row": to_jsonable_python(dict(row))}, separators=(",", ":"))
                    for row in batch
                )
                yield ("\n".join(lines) + "\n").encode()


@router.get(
    "/organization/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "NDJSON, one row per line"}},
)
async def export_organization(caller: CurrentCaller, resources: Resources) -> StreamingResponse:
    """Every row of the caller's organisation, table by table, as NDJSON (secrets left out)."""
    filename = f"aegis-export-{caller.organization_id}.ndjson"
    return StreamingResponse(
        _export_lines(resources, caller.organization_id),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class Retention(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_days: int | None = Field(
        ge=1,
        le=36_500,
        description="Traces older than this many days are deleted by the daily retention schedule "
        "(with their results, labels and audit rows); null keeps them.",
    )


@router.get("/organization/retention", response_model=Retention)
async def get_retention(caller: CurrentCaller, session: Session) -> Retention:
    days = await session.scalar(
        select(Organization.retention_days).where(Organization.id == caller.organization_id)
    )
    return Retention(retention_days=days)


@router.put("/organization/retention", response_model=Retention)
async def put_retention(body: Retention, caller: CurrentCaller, session: Session) -> Retention:
    """How long the organisation's traces are kept; the retention schedule
    (`ApplyRetention`, daily at `AEGIS_RETENTION_CRON`) deletes older ones."""
    await session.execute(
        update(Organization)
        .where(Organization.id == caller.organization_id)
        .values(retention_days=body.retention_days)
    )
    await session.commit()
    return body


class PurgeResult(BaseModel):
    organization_id: uuid.UUID
    traces_deleted: int
    # The Temporal batch job deleting the workflows, or None when Temporal could
    # not be reached (their histories then expire with the namespace's retention).
    workflow_deletion_job_id: str | None


@router.delete("/organization", response_model=PurgeResult)
async def purge_organization(
    caller: CurrentCaller,
    session: Session,
    resources: Resources,
    confirm: Annotated[uuid.UUID, Query(description="The organisation's own id, to confirm the purge.")],
) -> PurgeResult:
    """Delete the organisation and all its data: traces, results, labels, keys, settings.

    Irreversible; take `GET /organization/export` first. Every API key of the
    organisation stops working at once.
    """
    if confirm != caller.organization_id:
        raise ApiError(422, "confirmation_mismatch", "confirm must be the id of the caller's organisation")
    # Workflows first: once they are terminated nothing writes results back.
    job_id = await start_organization_workflow_deletion(
        resources.temporal, resources.settings, caller.organization_id
    )
    traces = await session.scalar(
        select(func.count()).select_from(Trace).where(Trace.organization_id == caller.organization_id)
    )
    await session.execute(delete(Organization).where(Organization.id == caller.organization_id))
    await session.commit()
    return PurgeResult(
        organization_id=caller.organization_id,
        traces_deleted=traces or 0,
        workflow_deletion_job_id=job_id,
    )
