"""Ingestion: store traces first, then start their workflows.

Order matters for "an accepted trace is never lost": the trace is committed
to PostgreSQL as ``pending_dispatch`` before Temporal is asked for anything.
If the workflow start fails (Temporal down), the client still gets its 202
and the dispatch sweep starts the workflow once Temporal is back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from api.deps import AppResources
from core.dispatch import mark_queued, start_evaluation
from models.schemas import TraceIn, TraceStatus
from models.tables import Trace

# Workflow starts in flight at once for one batch: enough to hide the round
# trip, few enough not to flood the Temporal frontend.
BATCH_START_CONCURRENCY = 32


@dataclass
class StoredTrace:
    trace_id: uuid.UUID
    domain: str
    status: TraceStatus
    duplicate: bool


def _row(organization_id: uuid.UUID, trace: TraceIn) -> dict[str, Any]:
    data = trace.model_dump(exclude={"metadata"})
    return {
        **data,
        "id": uuid.uuid4(),
        "organization_id": organization_id,
        "metadata": trace.metadata,
        "status": TraceStatus.PENDING_DISPATCH.value,
    }


async def store_traces(
    resources: AppResources, organization_id: uuid.UUID, traces: list[TraceIn]
) -> list[StoredTrace]:
    """Insert in one statement; an ``external_id`` seen before returns the existing trace."""
    rows = [_row(organization_id, t) for t in traces]
    table = Trace.__table__
    statement = (
        insert(table)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["organization_id", "external_id"])
        .returning(table.c.id)
    )
    async with resources.session_factory() as session:
        inserted = set((await session.execute(statement)).scalars())
        duplicates_wanted = {r["external_id"] for r in rows if r["id"] not in inserted}
        existing: dict[str, tuple[uuid.UUID, str]] = {}
        if duplicates_wanted:
            found = await session.execute(
                select(Trace.external_id, Trace.id, Trace.status).where(
                    Trace.organization_id == organization_id, Trace.external_id.in_(duplicates_wanted)
                )
            )
            existing = {ext: (tid, st) for ext, tid, st in found}
        await session.commit()

    stored: list[StoredTrace] = []
    for row in rows:
        if row["id"] in inserted:
            stored.append(
                StoredTrace(row["id"], row["domain"], TraceStatus.PENDING_DISPATCH, duplicate=False)
            )
        else:
            trace_id, status = existing[row["external_id"]]
            stored.append(StoredTrace(trace_id, row["domain"], TraceStatus(status), duplicate=True))
    return stored


async def dispatch(resources: AppResources, organization_id: uuid.UUID, stored: list[StoredTrace]) -> None:
    """Start workflows for newly stored traces and record which ones started."""
    fresh = [s for s in stored if not s.duplicate]
    if not fresh:
        return
    settings = resources.settings
    timeout = dt.timedelta(seconds=settings.temporal_rpc_timeout_seconds)
    limiter = asyncio.Semaphore(BATCH_START_CONCURRENCY)

    async def start(item: StoredTrace) -> bool:
        async with limiter:
            return await start_evaluation(
                resources.temporal,
                settings,
                item.trace_id,
                organization_id,
                item.domain,
                rpc_timeout=timeout,
            )

    started = await asyncio.gather(*(start(item) for item in fresh))
    queued = [item for item, ok in zip(fresh, started, strict=True) if ok]
    if not queued:
        return
    async with resources.session_factory() as session:
        await mark_queued(session, (item.trace_id for item in queued))
        await session.commit()
    for item in queued:
        item.status = TraceStatus.QUEUED


async def ingest(
    resources: AppResources, organization_id: uuid.UUID, traces: list[TraceIn]
) -> list[StoredTrace]:
    stored = await store_traces(resources, organization_id, traces)
    await dispatch(resources, organization_id, stored)
    return stored
