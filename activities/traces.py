"""Reading a trace in the activities that write its outcome."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activities.errors import trace_not_found
from models.tables import Trace


async def locked_trace(session: AsyncSession, trace_id: uuid.UUID, organization_id: uuid.UUID) -> Trace:
    """The organisation's trace, locked for this transaction: activities that
    write a trace's outcome take turns. Raises ``trace_not_found`` when gone."""
    trace = await session.scalar(
        select(Trace).where(Trace.id == trace_id, Trace.organization_id == organization_id).with_for_update()
    )
    if trace is None:
        raise trace_not_found()
    return trace
