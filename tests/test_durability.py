"""Accepted traces are never lost, and retried steps never duplicate rows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.persist import PersistActivities
from api.app import create_app
from api.deps import AppResources
from core.embedded import free_port
from core.packs import PackResolver
from core.settings import Settings
from core.worker import ensure_dispatch_schedule
from domains import load_domain_pack
from evaluators.types import Finding, Severity, Span
from models.schemas import DispatchSweepInput, PackRef, PersistInput, TierOutcome
from models.tables import EvaluationIssue, EvaluationResult, Trace, UsageMetric, VerdictChange
from tests.helpers import OrgClient, settled_automatically
from workflows.dispatch_sweep import SCHEDULE_ID

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
async def api_without_temporal(resources: AppResources) -> AsyncIterator[httpx.AsyncClient]:
    """The API as it runs while Temporal is down: a lazy client to a port nobody listens on."""
    dead = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter)
    app = create_app(resources=AppResources(resources.settings, resources.session_factory, dead))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
    ) as client:
        yield client


async def test_trace_accepted_while_temporal_is_down_is_evaluated_once_it_is_back(
    org: OrgClient, api_without_temporal: httpx.AsyncClient, temporal_client: Client, settings: Settings
) -> None:
    started = time.monotonic()
    response = await api_without_temporal.post(
        "/api/v1/traces",
        json={"model": "gpt-4", "input": "What is 2+2?", "output": "4", "domain": "healthcare"},
        headers=org.headers,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending_dispatch"
    # Ingestion does not wait for Temporal at all (the start is attempted in the background).
    assert elapsed < settings.temporal_rpc_timeout_seconds
    trace_id = response.json()["trace_id"]
    assert (await org.get(f"/api/v1/traces/{trace_id}")).json()["status"] == "pending_dispatch"

    # Temporal is "back": the sweep the schedule runs picks the trace up.
    dispatched = await temporal_client.execute_workflow(
        "DispatchPendingTraces",
        DispatchSweepInput(older_than_seconds=0),
        id=f"test-sweep-{uuid.uuid4()}",
        task_queue=settings.task_queue,
        result_type=int,
    )
    assert dispatched >= 1
    evaluation = await org.wait_for_evaluation(trace_id)
    assert settled_automatically(evaluation) and evaluation["passed"] is True


async def test_dispatch_schedule_is_created_once(temporal_client: Client, settings: Settings) -> None:
    await ensure_dispatch_schedule(temporal_client, settings)
    await ensure_dispatch_schedule(temporal_client, settings)  # idempotent
    handle = temporal_client.get_schedule_handle(SCHEDULE_ID)
    description = await handle.describe()
    assert description.schedule.action.workflow == "DispatchPendingTraces"
    assert description.schedule.action.task_queue == settings.task_queue
    await handle.delete()


async def test_persist_retried_writes_nothing_twice(
    org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    trace_id = uuid.UUID(await org.submit(output="The patient's SSN is 219-09-9999."))
    await org.wait_for_evaluation(str(trace_id))
    organization_id = uuid.UUID(org.organization_id)

    finding = Finding(
        rule_id="pii.ssn",
        category="pii",
        severity=Severity.HIGH,
        message="SSN in output",
        spans=[Span(field="output", start=21, end=32)],
    )
    task = PersistInput(
        trace_id=trace_id,
        organization_id=organization_id,
        domain="generic",
        pack=PackRef(source="builtin", name="generic", version=load_domain_pack("generic").version),
        workflow_id="w",
        run_id="r",
        outcomes=[
            TierOutcome(tier=0, name="sanitise", status="completed"),
            TierOutcome(tier=1, name="rules", status="completed", severity=Severity.HIGH, findings=[finding]),
        ],
    )
    persist = PersistActivities(session_factory, PackResolver(session_factory)).persist
    first = await persist(task)
    second = await persist(task)  # a retry after a lost acknowledgement
    assert first == second and first.passed is False

    async with session_factory() as session:
        results = await session.scalar(
            select(func.count()).select_from(EvaluationResult).where(EvaluationResult.trace_id == trace_id)
        )
        issues = await session.scalar(
            select(func.count()).select_from(EvaluationIssue).where(EvaluationIssue.trace_id == trace_id)
        )
        evaluated = await session.scalar(
            select(func.sum(UsageMetric.evaluations)).where(UsageMetric.organization_id == organization_id)
        )
        status = await session.scalar(select(Trace.status).where(Trace.id == trace_id))
    assert (results, issues, status) == (1, 1, "completed")
    # Counted once, by the workflow's own persist, not again by the retries.
    assert evaluated == 1


async def test_two_attempts_of_one_persist_store_it_once_when_one_waited_for_the_other(
    org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    """An attempt that timed out may still run when its retry starts: the retry
    waits for the trace's lock and must then see what the first stored."""
    trace_id = uuid.UUID(await org.submit())
    await org.wait_for_evaluation(str(trace_id))
    task = PersistInput(
        trace_id=trace_id,
        organization_id=uuid.UUID(org.organization_id),
        domain="generic",
        pack=PackRef(source="builtin", name="generic", version=load_domain_pack("generic").version),
        workflow_id="w",
        run_id="r",
        version=2,
        outcomes=[TierOutcome(tier=0, name="sanitise", status="completed")],  # no issues to collide on
    )
    persist = PersistActivities(session_factory, PackResolver(session_factory)).persist
    async with session_factory() as holder, holder.begin():
        await holder.execute(select(Trace.id).where(Trace.id == trace_id).with_for_update())
        attempts = [asyncio.create_task(persist(task)) for _ in range(2)]
        await asyncio.sleep(0.5)  # both wait for the lock
    first, second = await asyncio.gather(*attempts)
    assert first == second
    async with session_factory() as session:
        changes = await session.scalar(
            select(func.count())
            .select_from(VerdictChange)
            .where(VerdictChange.trace_id == trace_id, VerdictChange.version == 2)
        )
        current = list(
            await session.scalars(
                select(EvaluationResult.version).where(
                    EvaluationResult.trace_id == trace_id, EvaluationResult.current
                )
            )
        )
    assert (changes, current) == (1, [2])


async def test_persist_keeps_the_newest_version_current_whatever_order_versions_finish(
    org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    trace_id = uuid.UUID(await org.submit(output="The patient's SSN is 219-09-9999."))
    await org.wait_for_evaluation(str(trace_id))  # version 1, stored by the workflow
    organization_id = uuid.UUID(org.organization_id)
    persist = PersistActivities(session_factory, PackResolver(session_factory)).persist

    def version(number: int, findings: int) -> PersistInput:
        finding = Finding(rule_id="pii.ssn", category="pii", severity=Severity.HIGH, message="SSN in output")
        return PersistInput(
            trace_id=trace_id,
            organization_id=organization_id,
            domain="generic",
            pack=PackRef(source="builtin", name="generic", version=load_domain_pack("generic").version),
            workflow_id="w",
            run_id=f"r{number}",
            version=number,
            outcomes=[
                TierOutcome(tier=0, name="sanitise", status="completed"),
                TierOutcome(
                    tier=1,
                    name="rules",
                    status="completed",
                    severity=Severity.HIGH,
                    findings=[finding] * findings,
                ),
            ],
        )

    async def stored() -> tuple[list[int], dict[int, int], int]:
        async with session_factory() as session:
            current = list(
                await session.scalars(
                    select(EvaluationResult.version).where(
                        EvaluationResult.trace_id == trace_id, EvaluationResult.current
                    )
                )
            )
            issues = dict(
                (
                    await session.execute(
                        select(EvaluationIssue.version, func.count())
                        .where(EvaluationIssue.trace_id == trace_id)
                        .group_by(EvaluationIssue.version)
                    )
                ).all()
            )
            changes = await session.scalar(
                select(func.count()).select_from(VerdictChange).where(VerdictChange.trace_id == trace_id)
            )
        return current, issues, changes

    await persist(version(3, findings=1))  # a newer version: becomes current
    assert await stored() == ([3], {1: 1, 3: 1}, 2)
    await persist(version(2, findings=2))  # finishes after version 3: stored, not current
    assert await stored() == ([3], {1: 1, 2: 2, 3: 1}, 3)
    await persist(version(2, findings=1))  # its retry replaces its issues, adds no audit row
    assert await stored() == ([3], {1: 1, 2: 1, 3: 1}, 3)
    await persist(version(4, findings=0))
    assert await stored() == ([4], {1: 1, 2: 1, 3: 1}, 4)


async def test_readiness_names_the_unreachable_dependency(
    api: httpx.AsyncClient, api_without_temporal: httpx.AsyncClient
) -> None:
    ok = await api.get("/health/ready")
    assert ok.status_code == 200 and ok.json()["checks"] == {"database": "ok", "temporal": "ok"}
    down = await api_without_temporal.get("/health/ready")
    assert down.status_code == 503
    assert down.json()["error"]["details"] == {"database": "ok", "temporal": "unreachable"}
    assert (await api_without_temporal.get("/health")).json() == {"status": "ok"}
