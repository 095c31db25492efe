"""What operators see: stuck evaluations with their last error, links to the
Temporal UI, and a workflow timeline that reads in plain words."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from api.deps import AppResources
from models.schemas import FinalVerdict, workflow_id_for
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import OrgClient
from tests.test_judge_e2e import setup_judge, submit

pytestmark = pytest.mark.usefixtures("worker")


async def test_a_retrying_evaluation_is_listed_as_stuck_with_its_last_error(
    org: OrgClient, fake_llm: FakeLLM
) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.error(503, retry_after=60))
    stuck_trace = await submit(org)
    done = await org.submit(domain="generic")
    await org.wait_for_evaluation(done)

    deadline = time.monotonic() + 15
    while True:
        items = (await org.get("/api/v1/stuck-evaluations", params={"older_than_minutes": 60})).json()
        if items:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    [item] = items
    assert (item["trace_id"], item["status"]) == (stuck_trace, "retrying")
    assert (item["last_error_kind"], item["attempts"]) == ("server_error", 1)
    assert item["workflow_id"] == workflow_id_for(uuid.UUID(stuck_trace))
    bad = await org.get("/api/v1/stuck-evaluations", params={"older_than_minutes": 0})
    assert bad.status_code == 422 and "older_than_minutes" in bad.text
    assert (await org.delete(f"/api/v1/traces/{stuck_trace}")).status_code == 204


async def test_traces_link_to_their_workflow_and_the_timeline_reads_in_words(
    org: OrgClient, resources: AppResources, temporal_client: Client
) -> None:
    trace_id = await org.submit(domain="generic", input="Hi", output="Hello! My SSN is 219-09-9999.")
    await org.wait_for_evaluation(trace_id)
    workflow_id = workflow_id_for(uuid.UUID(trace_id))

    plain = (await org.get(f"/api/v1/traces/{trace_id}")).json()
    assert (plain["workflow_id"], plain["workflow_url"]) == (workflow_id, None)
    linked_settings = resources.settings.model_copy(update={"temporal_ui_url": "http://ui.example:8233/"})
    linked = AppResources(linked_settings, resources.session_factory, resources.temporal)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(resources=linked)), base_url="http://aegis.test"
    ) as api:
        body = (await api.get(f"/api/v1/traces/{trace_id}", headers=org.headers)).json()
    namespace = resources.settings.temporal_namespace
    assert body["workflow_url"] == f"http://ui.example:8233/namespaces/{namespace}/workflows/{workflow_id}"

    handle = temporal_client.get_workflow_handle(workflow_id, result_type=FinalVerdict)
    await handle.result()
    described = await handle.describe()
    summary = await described.static_summary()
    assert summary is not None and trace_id in summary
    history = await handle.fetch_history()
    summaries = [
        json.loads(event.user_metadata.summary.data)
        for event in history.events
        if event.HasField("user_metadata") and event.user_metadata.HasField("summary")
    ]
    assert (
        "Tier 1: the domain pack's rules" in summaries and "Store the verdict, issues and usage" in summaries
    )
    recorded = history.to_json()
    assert "219-09-9999" not in recorded and "Hello!" not in recorded
