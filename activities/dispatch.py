"""The dispatch sweep: start workflows for traces stored while Temporal was down."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from core.dispatch import mark_queued, start_evaluation
from core.settings import Settings
from models.schemas import DispatchSweepInput, DispatchSweepResult, TraceStatus
from models.tables import Trace


class DispatchActivities:
    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], client: Client, settings: Settings
    ) -> None:
        self._sessions = session_factory
        self._client = client
        self._settings = settings

    @activity.defn(name="dispatch_pending_traces")
    async def dispatch_pending(self, task: DispatchSweepInput) -> DispatchSweepResult:
        # Traces younger than the grace period are still being dispatched by
        # the API request that stored them.
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=task.older_than_seconds)
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(Trace.id, Trace.organization_id, Trace.domain, Trace.evaluation_version)
                    .where(Trace.status == TraceStatus.PENDING_DISPATCH.value, Trace.created_at < cutoff)
                    .order_by(Trace.created_at)
                    .limit(task.limit)
                )
            ).all()
        started = []
        for trace_id, organization_id, domain, version in rows:
            if await start_evaluation(
                self._client, self._settings, trace_id, organization_id, domain, version=version
            ):
                started.append(trace_id)
            activity.heartbeat(len(started))
        async with self._sessions() as session:
            await mark_queued(session, started)
            await session.commit()
        return DispatchSweepResult(dispatched=len(started), remaining=len(rows) == task.limit)
