"""A review deadline measured in days, on a Temporal server that skips time.

The real dev server is started with per-workflow time skipping; workflows
started through its client have their own virtual clock, which jumps ahead
whenever they only wait on a timer. A trace waiting 48 hours for a review
therefore expires in a moment, exercising the same code as in production.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.deps import AppResources
from core import search_attributes as sa
from core.embedded import temporal_binary
from core.settings import Settings
from core.worker import build_workers
from models.schemas import FinalVerdict, workflow_id_for
from tests.helpers import OrgClient, with_own_queues

PACK = """
name: slow-review
version: 1
display_name: Reviewed within two days
extends: generic
risk_level: high
escalation:
  audit_sample_rate: 1.0
  review_deadline_hours: 48
"""


@pytest.fixture(scope="module")
async def skipping_api(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[tuple[httpx.AsyncClient, WorkflowEnvironment]]:
    env = await WorkflowEnvironment.start_time_skipping_v2(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"],
        search_attributes=sa.ALL,
    )
    own = with_own_queues(settings, "skip")
    try:
        async with contextlib.AsyncExitStack() as running:
            for worker in build_workers(env.client, session_factory, own):
                await running.enter_async_context(worker)
            app = create_app(resources=AppResources(own, session_factory, env.client))
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
            ) as api:
                yield api, env
    finally:
        await env.shutdown()


async def test_a_two_day_review_deadline_expires_with_the_automated_verdict(
    skipping_api: tuple[httpx.AsyncClient, WorkflowEnvironment],
) -> None:
    api, env = skipping_api
    org = await OrgClient.create(api, f"skip-{uuid.uuid4().hex[:8]}")
    created = await api.post(
        "/api/v1/domains", content=PACK, headers={**org.headers, "Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    started = time.monotonic()
    trace_id = await org.submit(domain="slow-review", input="Is this fine?", output="Yes.")

    handle = env.client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)), result_type=FinalVerdict)
    verdict = await handle.result()

    assert verdict is not None and verdict.decided_by == "rules"
    assert time.monotonic() - started < 30  # 48 virtual hours, seconds of real time
    body = (await org.get(f"/api/v1/evaluations/{trace_id}")).json()
    assert body["status"] == "completed"
    review = body["review"]
    assert review["status"] == "expired"
    waited = dt.datetime.fromisoformat(review["deadline"]) - dt.datetime.fromisoformat(review["created_at"])
    assert abs(waited - dt.timedelta(hours=48)) < dt.timedelta(minutes=1)
    expert = next(t for t in body["tiers"] if t["name"] == "expert")
    assert expert["status"] == "expired" and expert["detail"]["reason"] == "review_expired"
