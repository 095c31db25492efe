"""Retention: delete the traces an organisation keeps no longer.

An organisation that sets ``retention_days`` has its traces older than that
deleted, with everything that hangs off them (results, issues, labels,
judge calls, review requests, audit rows, alerts) through the schema's
cascades. Their workflow histories leave Temporal with the namespace's own
retention; a workflow still running for a deleted trace stops by itself.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.events import KEPT_FOR
from models.schemas import RetentionSweepInput, RetentionSweepResult
from models.tables import ConsoleSession, Event, Organization, Trace


class RetentionActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory

    @activity.defn(name="delete_expired_traces")
    async def delete_expired(self, task: RetentionSweepInput) -> RetentionSweepResult:
        """One batch of expired traces, across organisations (in no order:
        sorting every expired trace of every organisation would cost more
        than the batch)."""
        expired = (
            select(Trace.id)
            .join(Organization, Organization.id == Trace.organization_id)
            .where(
                Organization.retention_days.is_not(None),
                Trace.created_at < func.now() - func.make_interval(0, 0, 0, Organization.retention_days),
            )
            .limit(task.batch_size)
        )
        # The oldest events in the log, whichever organisation's (the log is
        # in id order): those of them past core.events.KEPT_FOR go.
        oldest_events = (
            select(Event.id, Event.created_at).order_by(Event.id).limit(task.batch_size).subquery()
        )
        async with self._sessions() as session, session.begin():
            deleted = len(
                (await session.execute(delete(Trace).where(Trace.id.in_(expired)).returning(Trace.id))).all()
            )
            events_deleted = len(
                (
                    await session.execute(
                        delete(Event)
                        .where(
                            Event.id.in_(
                                select(oldest_events.c.id).where(
                                    oldest_events.c.created_at < func.now() - KEPT_FOR
                                )
                            )
                        )
                        .returning(Event.id)
                    )
                ).all()
            )
            # Console sign-ins past their expiry (few: one row per sign-in).
            await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < func.now()))
        activity.logger.info("retention deleted %d traces and %d events", deleted, events_deleted)
        return RetentionSweepResult(deleted=deleted, remaining=task.batch_size in (deleted, events_deleted))
