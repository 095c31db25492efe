"""Ingestion: store traces, answer, and start their workflows in the background.

Order matters for "an accepted trace is never lost": the trace is committed
to PostgreSQL as ``pending_dispatch`` before the client gets its 202, and
only then handed to the dispatcher (``api/dispatcher.py``), which starts the
workflow off the request path. If that fails (Temporal down), the dispatch
sweep starts it once Temporal is back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from api.deps import AppResources
from api.dispatcher import PendingStart
from models.schemas import TraceIn, TraceStatus
from models.tables import Trace


@dataclass
class StoredTrace:
    trace_id: uuid.UUID
    domain: str
    status: TraceStatus
    duplicate: bool


_INSERT = (
    insert(Trace.__table__)
    .on_conflict_do_nothing(index_elements=["organization_id", "external_id"])
    .returning(Trace.__table__.c.id)
)


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
    """Insert in one statement; an ``external_id`` seen before returns the existing trace.

    The statement is the same whatever the number of rows (they are its
    parameters), so it is compiled once per process, and it runs in
    autocommit: one round trip, atomic on its own.
    """
    rows = [_row(organization_id, t) for t in traces]
    async with resources.autocommit_sessions() as session:
        inserted = set((await session.execute(_INSERT, rows)).scalars())
        duplicates_wanted = {r["external_id"] for r in rows if r["id"] not in inserted}
        existing: dict[str, tuple[uuid.UUID, str]] = {}
        if duplicates_wanted:
            found = await session.execute(
                select(Trace.external_id, Trace.id, Trace.status).where(
                    Trace.organization_id == organization_id, Trace.external_id.in_(duplicates_wanted)
                )
            )
            existing = {ext: (tid, st) for ext, tid, st in found}

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


async def ingest(
    resources: AppResources, organization_id: uuid.UUID, traces: list[TraceIn]
) -> list[StoredTrace]:
    stored = await store_traces(resources, organization_id, traces)
    resources.dispatcher.submit(
        [PendingStart(item.trace_id, organization_id, item.domain) for item in stored if not item.duplicate]
    )
    return stored
