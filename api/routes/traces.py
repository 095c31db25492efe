"""Trace ingestion, listing, reading and deletion."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import ARRAY, Select, Uuid, any_, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses, validation_details
from api.ingest import ingest
from api.pagination import MAX_PAGE_SIZE, paginate, split_page, within
from core.dispatch import mark_queued, start_evaluation
from core.settings import workflow_url
from core.workflow_cleanup import delete_trace_workflows
from models.schemas import (
    FINAL_STATUSES,
    BatchAccepted,
    BatchIn,
    BatchItemResult,
    Page,
    ReevaluationAccepted,
    TraceAccepted,
    TraceIn,
    TraceOut,
    TraceStatus,
    workflow_id_for,
)
from models.tables import Trace

router = APIRouter(tags=["traces"], responses=AUTHENTICATED_ERRORS)
log = logging.getLogger(__name__)


class TraceSummary(BaseModel):
    trace_id: uuid.UUID
    external_id: str | None
    model: str
    domain: str
    status: TraceStatus
    created_at: dt.datetime
    evaluated_at: dt.datetime | None


@router.post(
    "/traces",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TraceAccepted,
    responses={200: {"model": TraceAccepted, "description": "The external_id was seen before: that trace"}},
)
async def submit_trace(body: TraceIn, caller: CurrentCaller, resources: Resources) -> JSONResponse:
    """Store a trace and start its evaluation. Same ``external_id`` → same trace (200)."""
    [stored] = await ingest(resources, caller.organization_id, [body])
    accepted = TraceAccepted(trace_id=stored.trace_id, status=stored.status, duplicate=stored.duplicate)
    return JSONResponse(accepted.model_dump(mode="json"), status_code=200 if stored.duplicate else 202)


@router.post("/traces/batch", status_code=status.HTTP_202_ACCEPTED, response_model=BatchAccepted)
async def submit_batch(body: BatchIn, caller: CurrentCaller, resources: Resources) -> BatchAccepted:
    """Up to AEGIS_MAX_BATCH_SIZE traces; each is accepted or rejected on its own."""
    limit = resources.settings.max_batch_size
    if len(body.traces) > limit:
        raise ApiError(
            422,
            "batch_too_large",
            f"A batch holds at most {limit} traces",
            [{"field": "body.traces", "message": f"{len(body.traces)} items, limit {limit}"}],
        )
    results: list[BatchItemResult] = []
    valid: list[tuple[int, TraceIn]] = []
    for index, raw in enumerate(body.traces):
        try:
            valid.append((index, TraceIn.model_validate(raw)))
        except ValidationError as exc:
            errors = validation_details(exc.errors())
            for err in errors:
                err["field"] = f"body.traces.{index}.{err['field']}"
            results.append(BatchItemResult(index=index, accepted=False, errors=errors))
    if valid:
        stored = await ingest(resources, caller.organization_id, [t for _, t in valid])
        for (index, _), item in zip(valid, stored, strict=True):
            results.append(
                BatchItemResult(
                    index=index,
                    accepted=True,
                    trace_id=item.trace_id,
                    status=item.status,
                    duplicate=item.duplicate,
                )
            )
    results.sort(key=lambda r: r.index)
    accepted = sum(r.accepted for r in results)
    return BatchAccepted(accepted=accepted, rejected=len(results) - accepted, results=results)


@router.get("/traces", response_model=Page[TraceSummary])
async def list_traces(
    caller: CurrentCaller,
    session: Session,
    domain: str | None = None,
    status_: Annotated[TraceStatus | None, Query(alias="status")] = None,
    model: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Full-text search over input and output: words (all must occur), "
            '"a phrase", or -excluded, as web search engines take them.',
        ),
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[TraceSummary]:
    query = select(Trace).where(Trace.organization_id == caller.organization_id)
    if domain:
        query = query.where(Trace.domain == domain)
    if status_:
        query = query.where(Trace.status == status_.value)
    if model:
        query = query.where(Trace.model == model)
    query = within(query, Trace.created_at, since, until)
    if q:
        query = await narrow_to_search(session, query, q)
    rows = list(await session.scalars(paginate(query, Trace.created_at, Trace.id, cursor, limit)))
    page, next_cursor = split_page(rows, limit, lambda t: (t.created_at, t.id))
    items = [TraceSummary.model_validate(_trace_fields(t)) for t in page]
    return Page[TraceSummary](items=items, next_cursor=next_cursor)


# A search matching at most this many traces is answered from their ids.
SEARCH_CANDIDATES = 5_000


async def narrow_to_search(session: AsyncSession, query: Select[Any], q: str) -> Select[Any]:
    """``query`` narrowed to the traces whose text matches ``q``.

    The newest matches of a frequent word are found fastest by walking the
    traces newest first and testing each; those of a rare word (a name, an
    error code) by looking them up in the search index. PostgreSQL's guess
    of how rare a word is can be off by a thousand times, so the index is
    asked first, for at most SEARCH_CANDIDATES matches, without an order
    (which it answers fast either way). Fewer than that: the page comes
    from those ids. More: the word is frequent, and the walk is fast.
    """
    matches = Trace.search_document.op("@@")(func.websearch_to_tsquery("simple", q))
    candidates = list(
        await session.scalars(query.with_only_columns(Trace.id).where(matches).limit(SEARCH_CANDIDATES + 1))
    )
    if len(candidates) <= SEARCH_CANDIDATES:
        return query.where(Trace.id == any_(bindparam("candidates", candidates, type_=ARRAY(Uuid))))
    return query.where(matches)


def _trace_fields(trace: Trace) -> dict[str, Any]:
    """Column values under their API names (``trace_id``, ``metadata``)."""
    fields = {
        column.key: getattr(trace, column.key)
        for column in Trace.__mapper__.column_attrs
        if column.key != "search_document"  # derived, and not loaded
    }
    return fields | {"trace_id": trace.id, "metadata": trace.metadata_}


async def load_trace(session: Session, caller: CurrentCaller, trace_id: uuid.UUID) -> Trace:
    """The caller's trace, or 404 — also when it belongs to another organisation."""
    trace = await session.scalar(
        select(Trace).where(Trace.id == trace_id, Trace.organization_id == caller.organization_id)
    )
    if trace is None:
        raise ApiError(404, "not_found", "Trace not found")
    return trace


@router.get("/traces/{trace_id}", response_model=TraceOut, responses=error_responses(404))
async def get_trace(
    trace_id: uuid.UUID, caller: CurrentCaller, session: Session, resources: Resources
) -> TraceOut:
    trace = await load_trace(session, caller, trace_id)
    workflow_id = workflow_id_for(trace.id, trace.evaluation_version)
    return TraceOut.model_validate(
        _trace_fields(trace)
        | {"workflow_id": workflow_id, "workflow_url": workflow_url(resources.settings, workflow_id)}
    )


@router.delete("/traces/{trace_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404))
async def delete_trace(
    trace_id: uuid.UUID, caller: CurrentCaller, session: Session, resources: Resources
) -> None:
    """Delete the trace, its results and labels, and its workflows' histories.

    Temporal terminates a running workflow and drops its history (which holds
    the trace's text). An unreachable Temporal does not block deletion: the
    workflow stops itself on a missing trace and its history expires with the
    namespace's retention.
    """
    trace = await load_trace(session, caller, trace_id)
    await delete_trace_workflows(resources.temporal, resources.settings, trace_id, trace.evaluation_version)
    await session.execute(
        delete(Trace).where(Trace.id == trace_id, Trace.organization_id == caller.organization_id)
    )
    await session.commit()


@router.post(
    "/traces/{trace_id}/reevaluate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReevaluationAccepted,
    responses=error_responses(404, 409),
)
async def reevaluate_trace(
    trace_id: uuid.UUID, caller: CurrentCaller, session: Session, resources: Resources
) -> ReevaluationAccepted:
    """Evaluate the trace again (after changing the judge or the pack) as a new version.

    Earlier versions are kept; the new one becomes current when it finishes.
    Like ingestion, the new version is recorded before Temporal is asked, so
    it runs even if Temporal is down right now.
    """
    trace = await load_trace(session, caller, trace_id)
    if TraceStatus(trace.status) not in FINAL_STATUSES:
        raise ApiError(
            409,
            "evaluation_in_progress",
            f"The trace is {trace.status}; re-evaluate it once its evaluation has finished",
        )
    version = await session.scalar(
        update(Trace)
        .where(Trace.id == trace.id, Trace.status.in_([s.value for s in FINAL_STATUSES]))
        .values(evaluation_version=Trace.evaluation_version + 1, status=TraceStatus.PENDING_DISPATCH.value)
        .returning(Trace.evaluation_version)
    )
    await session.commit()
    if version is None:  # another request won the race
        raise ApiError(409, "evaluation_in_progress", "A re-evaluation of this trace has just started")
    settings = resources.settings
    started = await start_evaluation(
        resources.temporal,
        settings,
        trace.id,
        trace.organization_id,
        trace.domain,
        version=version,
        rpc_timeout=dt.timedelta(seconds=settings.temporal_rpc_timeout_seconds),
    )
    current = TraceStatus.PENDING_DISPATCH
    if started:
        await mark_queued(session, [trace.id])
        await session.commit()
        current = TraceStatus.QUEUED
    return ReevaluationAccepted(
        trace_id=trace.id, version=version, status=current, workflow_id=workflow_id_for(trace.id, version)
    )
