"""Load: thousands of traces through the batch endpoint and concurrent single
POSTs, evaluated by two worker processes; every one reaches a final status and
the counts agree between the API, PostgreSQL and Temporal.

``AEGIS_LOAD_TEST_TRACES`` sets the size: 3,000 by default, which keeps the
suite within a few minutes on two cores (the embedded Temporal dev server
evaluates about 20 traces/s); the README reports a 10,000-trace run.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.app import create_app
from api.deps import AppResources
from api.pagination import MAX_PAGE_SIZE
from core import search_attributes
from core.settings import Settings
from models.tables import Trace
from tests.helpers import OrgClient, with_own_queues
from tests.test_reliability import schedule_exists, stop_workers, stored_results, worker_process

TRACES = int(os.environ.get("AEGIS_LOAD_TEST_TRACES", "3000"))
BATCH_SIZE = 500
SINGLE_SHARE = 0.1  # of the traces, sent one POST at a time
SINGLE_CONCURRENCY = 16
FINAL = ("completed", "failed", "awaiting_review")
DOMAINS = ("generic", "healthcare", "trading", "legal")


def trace(n: int) -> dict[str, str]:
    unsafe = n % 5 == 0
    return {
        "model": "load-test",
        "input": f"Question {n}: how much ibuprofen can I take?",
        "output": "Take 4000 mg every 2 hours."
        if unsafe
        else f"Answer {n}: follow the label and ask your pharmacist.",
        "domain": DOMAINS[n % len(DOMAINS)],
        "external_id": f"load-{n}",
    }


@pytest.fixture
def load_settings(settings: Settings) -> Settings:
    # The rate limit protects a deployment from one noisy client; this is that client.
    return with_own_queues(settings, "load", api_rate_limit_per_minute=0)


async def count_by_status(
    session_factory: async_sessionmaker[AsyncSession], organization_id: uuid.UUID
) -> dict[str, int]:
    async with session_factory() as session:
        rows = await session.execute(
            select(Trace.status, func.count())
            .where(Trace.organization_id == organization_id)
            .group_by(Trace.status)
        )
        return {status: count for status, count in rows.all()}


# Ingesting takes seconds; evaluating runs at the dev server's pace.
@pytest.mark.timeout(180 + TRACES // 5)
async def test_thousands_of_traces_all_reach_a_final_status_and_reconcile(
    load_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> None:
    schedule_existed = await schedule_exists(temporal_client)
    app = create_app(resources=AppResources(load_settings, session_factory, temporal_client))
    workers = [worker_process(load_settings), worker_process(load_settings)]
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://aegis.test", timeout=60
        ) as api:
            org = await OrgClient.create(api, f"load-{uuid.uuid4().hex[:6]}")
            organization_id = uuid.UUID(org.organization_id)
            singles = list(range(int(TRACES * SINGLE_SHARE)))
            batched = list(range(len(singles), TRACES))

            async def send_batches() -> int:
                accepted = 0
                for start in range(0, len(batched), BATCH_SIZE):
                    chunk = [trace(n) for n in batched[start : start + BATCH_SIZE]]
                    response = await org.post("/api/v1/traces/batch", json={"traces": chunk})
                    assert response.status_code == 202, response.text
                    accepted += response.json()["accepted"]
                return accepted

            async def send_singles(lane: int) -> int:
                accepted = 0
                for n in singles[lane::SINGLE_CONCURRENCY]:
                    response = await org.post("/api/v1/traces", json=trace(n))
                    assert response.status_code == 202, response.text
                    accepted += 1
                return accepted

            counts = await asyncio.gather(
                send_batches(), *(send_singles(i) for i in range(SINGLE_CONCURRENCY))
            )
            assert sum(counts) == TRACES
            ingested = time.monotonic()

            deadline = ingested + max(300.0, TRACES / 10)
            while True:
                statuses = await count_by_status(session_factory, organization_id)
                if sum(statuses.get(status, 0) for status in FINAL) == TRACES:
                    break
                assert time.monotonic() < deadline, f"not all final in time: {statuses}"
                await asyncio.sleep(1.0)
            finished = time.monotonic()

            # The API's view: every page of the caller's traces, and the usage report.
            listed: dict[str, int] = {}
            cursor = None
            while True:
                params = {"limit": MAX_PAGE_SIZE, **({"cursor": cursor} if cursor else {})}
                page = (await org.get("/api/v1/traces", params=params)).json()
                for item in page["items"]:
                    listed[item["status"]] = listed.get(item["status"], 0) + 1
                if not (cursor := page["next_cursor"]):
                    break
            usage = (await org.get("/api/v1/usage")).json()
    finally:
        await stop_workers(workers, temporal_client, schedule_existed)

    print(
        f"\nload: {TRACES} traces ingested in {ingested - started:.1f}s, "
        f"all final after {finished - started:.1f}s ({TRACES / (finished - started):.0f} traces/s end to end)"
    )
    assert statuses.get("failed", 0) == 0, statuses
    assert listed == statuses

    # PostgreSQL: one current result per trace, none twice.
    assert await stored_results(session_factory, organization_id) == (TRACES, TRACES)
    # The usage report counts each decision once.
    assert usage["totals"]["evaluations"] == TRACES, usage["totals"]

    # Temporal: one evaluation workflow per trace; only those awaiting review still run.
    query = (
        f"{search_attributes.ORGANIZATION.name} = '{organization_id}' AND WorkflowType = 'EvaluateTraceV2'"
    )
    total = (await temporal_client.count_workflows(query)).count
    running = (await temporal_client.count_workflows(f"{query} AND ExecutionStatus = 'Running'")).count
    assert (total, running) == (TRACES, statuses.get("awaiting_review", 0))
