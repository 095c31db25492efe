"""The organisation's event log behind ``GET /api/v1/events``.

Activities publish an event in the same transaction as the change it
reports, so an event exists exactly when its change committed, and a
retried attempt that changes nothing publishes nothing. Events carry ids,
verdicts and versions, never trace text.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.tables import Event

# What the stream reports.
EVALUATION_COMPLETED = "evaluation.completed"
REVIEW_REQUESTED = "review.requested"
VERDICT_OVERRIDDEN = "verdict.overridden"
ALERT_RAISED = "alert.raised"

# The PostgreSQL channel an insert into ``events`` notifies (migration 0010).
CHANNEL = "aegis_events"
# How long a client can be away and still resume where it left off.
KEPT_FOR = dt.timedelta(days=7)


@dataclass(frozen=True)
class NewEvent:
    kind: str
    trace_id: uuid.UUID | None
    data: dict[str, Any] = field(default_factory=dict)


# Built once, executed with parameters (see core.db on prepared statements).
_LOCK_ORGANISATION_LOG = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("key"), 0)))
_INSERT_EVENT = insert(Event.__table__)


async def publish(session: AsyncSession, organization_id: uuid.UUID, events: Sequence[NewEvent]) -> None:
    """Add the events to the organisation's log. Call it last in the
    transaction, right before the commit.

    A stream reads the log by id, so an organisation's events must become
    visible in id order: an event whose id is taken before another's but
    committed after it would be skipped by a reader already past the later
    one. The transaction-scoped lock below makes the writers of one
    organisation take ids and commit one after another; taken last, it is
    held only for the insert and the commit.
    """
    if not events:
        return
    await session.execute(_LOCK_ORGANISATION_LOG, {"key": f"events:{organization_id}"})
    await session.execute(
        _INSERT_EVENT,
        [
            dict(organization_id=organization_id, kind=e.kind, trace_id=e.trace_id, data=e.data)
            for e in events
        ],
    )
