"""Retention: an organisation's setting, and the schedule that deletes exactly
the traces past it, with everything that hangs off them."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError

from core.settings import Settings
from core.worker import ensure_retention_schedule
from models.schemas import RetentionSweepInput
from models.tables import EvaluationResult, Event, Trace, VerdictChange
from tests.helpers import OrgClient
from workflows.retention import SCHEDULE_ID

pytestmark = pytest.mark.usefixtures("worker")


async def test_retention_setting_round_trip_and_validation(org: OrgClient) -> None:
    assert (await org.get("/api/v1/organization/retention")).json() == {"retention_days": None}
    assert (await org.put("/api/v1/organization/retention", {"retention_days": 90})).status_code == 200
    assert (await org.get("/api/v1/organization/retention")).json() == {"retention_days": 90}
    for body, field in (
        ({"retention_days": 0}, "body.retention_days"),
        ({}, "body.retention_days"),
        ({"retention_days": 5, "x": 1}, "body.x"),
    ):
        response = await org.put("/api/v1/organization/retention", body)
        assert response.status_code == 422, body
        assert field in [d["field"] for d in response.json()["error"]["details"]], response.text
    assert (await org.put("/api/v1/organization/retention", {"retention_days": None})).json() == {
        "retention_days": None
    }


async def backdate(
    session_factory: async_sessionmaker[AsyncSession], trace_ids: list[str], days: int
) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(
            update(Trace)
            .where(Trace.id.in_([uuid.UUID(t) for t in trace_ids]))
            .values(created_at=func.now() - func.make_interval(0, 0, 0, days))
        )


async def test_the_retention_run_deletes_exactly_the_expired_traces(
    org: OrgClient,
    other_org: OrgClient,
    temporal_client: Client,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    expired = [await org.submit(output=f"old answer {n}") for n in range(3)]
    kept_recent = await org.submit(output="new answer")
    kept_young = await org.submit(output="twenty days old")
    other_old = await other_org.submit(output="other organisation's old answer")
    for trace_id in (*expired, kept_recent, kept_young):
        await org.wait_for_evaluation(trace_id)
    await other_org.wait_for_evaluation(other_old)
    await backdate(session_factory, [*expired, other_old], days=40)
    await backdate(session_factory, [kept_young], days=20)
    await org.put("/api/v1/organization/retention", {"retention_days": 30})

    deleted = await temporal_client.execute_workflow(
        "ApplyRetention",
        RetentionSweepInput(batch_size=2),  # two batches and a last, empty one
        id=f"retention-test-{uuid.uuid4()}",
        task_queue=settings.task_queue,
        result_type=int,
    )
    assert deleted == 3

    for trace_id in expired:
        assert (await org.get(f"/api/v1/traces/{trace_id}")).status_code == 404
    for client, trace_id in ((org, kept_recent), (org, kept_young), (other_org, other_old)):
        assert (await client.get(f"/api/v1/traces/{trace_id}")).status_code == 200
    async with session_factory() as session:
        gone = [uuid.UUID(t) for t in expired]
        for table in (EvaluationResult, VerdictChange):
            left = await session.scalar(
                select(func.count()).select_from(table).where(table.trace_id.in_(gone))
            )
            assert left == 0, table.__tablename__

    # Events go after a week, whoever they belong to; newer ones stay.
    async with session_factory() as session, session.begin():
        old_events = await session.scalar(select(func.max(Event.id)))
        await session.execute(
            update(Event)
            .where(Event.id <= old_events)
            .values(created_at=func.now() - func.make_interval(0, 0, 0, 8))
        )
    recent = await org.submit(output="an answer after the old events")
    await org.wait_for_evaluation(recent)
    await temporal_client.execute_workflow(
        "ApplyRetention",
        RetentionSweepInput(batch_size=10_000),
        id=f"retention-test-{uuid.uuid4()}",
        task_queue=settings.task_queue,
        result_type=int,
    )
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).where(Event.id <= old_events)) == 0
        assert await session.scalar(select(func.count()).where(Event.trace_id == uuid.UUID(recent))) >= 1


async def test_the_retention_schedule_is_created_once(temporal_client: Client, settings: Settings) -> None:
    handle = temporal_client.get_schedule_handle(SCHEDULE_ID)
    with contextlib.suppress(RPCError):
        await handle.delete()  # one that a worker started by an earlier test created
    await ensure_retention_schedule(temporal_client, settings)
    await ensure_retention_schedule(temporal_client, settings)  # a second worker starting: no error, no copy
    description = await handle.describe()
    assert description.schedule.action.workflow == "ApplyRetention"
    assert description.schedule.action.task_queue == settings.task_queue
    await handle.delete()
