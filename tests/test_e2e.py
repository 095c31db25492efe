"""The README walk-through and the pipeline: real API, worker, Temporal and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client

from api.deps import AppResources
from models.schemas import WorkflowState, workflow_id_for
from tests.helpers import OrgClient, settled_automatically

pytestmark = pytest.mark.usefixtures("worker")


async def test_walkthrough_returns_a_final_evaluation(org: OrgClient) -> None:
    response = await org.post(
        "/api/v1/traces",
        json={"model": "gpt-4", "input": "What is 2+2?", "output": "4", "domain": "healthcare"},
    )
    assert response.status_code == 202
    body = response.json()
    # Stored; the workflow is started in the background, off the request path.
    assert body["status"] == "pending_dispatch"

    evaluation = await org.wait_for_evaluation(body["trace_id"])
    assert settled_automatically(evaluation), evaluation
    assert evaluation["passed"] is True
    assert evaluation["severity"] == "none"
    assert evaluation["decided_by"] == "rules"
    assert evaluation["issues"] == []
    tiers = {t["name"]: t["status"] for t in evaluation["tiers"]}
    # Nothing found: the rules settle it, no costlier tier runs.
    assert tiers == {"sanitise": "completed", "rules": "completed"}


async def test_the_dispatcher_starts_accepted_traces_in_the_background(
    org: OrgClient, resources: AppResources, temporal_client: Client
) -> None:
    trace_ids = [await org.submit(external_id=f"bg-{n}-{uuid.uuid4().hex[:6]}") for n in range(5)]
    await resources.dispatcher.idle()
    for trace_id in trace_ids:
        status = (await org.get(f"/api/v1/traces/{trace_id}")).json()["status"]
        assert status != "pending_dispatch", trace_id
        description = await temporal_client.get_workflow_handle(
            workflow_id_for(uuid.UUID(trace_id))
        ).describe()
        assert description.workflow_type == "EvaluateTraceV2"


async def test_overdose_fails_with_a_dosage_issue(org: OrgClient) -> None:
    trace_id = await org.submit(
        domain="healthcare",
        input="How much Tylenol can I take for my headache?",
        output="You can take 1000 mg of Tylenol every 3 hours until the pain stops.",
    )
    evaluation = await org.wait_for_evaluation(trace_id)
    assert evaluation["passed"] is False
    assert evaluation["severity"] in ("high", "critical")
    rule_ids = {i["rule_id"] for i in evaluation["issues"]}
    assert "healthcare.max_daily_dose" in rule_ids
    # Evidence is offsets into the output, not copied text.
    spans = [s for i in evaluation["issues"] for s in i["spans"]]
    assert spans and all(set(s) == {"field", "start", "end"} for s in spans)


async def test_pii_in_output_is_reported_without_echoing_it(org: OrgClient) -> None:
    ssn = "219-09-9999"
    trace_id = await org.submit(
        input="Who is the patient?", output=f"The patient's SSN is {ssn}, call 555-123-4567."
    )
    evaluation = await org.wait_for_evaluation(trace_id)
    rule_ids = {i["rule_id"] for i in evaluation["issues"]}
    assert {"pii.ssn", "pii.phone"} <= rule_ids
    assert evaluation["passed"] is False
    assert ssn not in str(evaluation)


async def test_empty_output_is_flagged(org: OrgClient) -> None:
    trace_id = await org.submit(output="   ")
    evaluation = await org.wait_for_evaluation(trace_id)
    assert "input.empty_output" in {i["rule_id"] for i in evaluation["issues"]}
    assert evaluation["decided_by"] == "sanitise"  # nothing to evaluate: Tier 0 settles it
    assert evaluation["passed"] is False


async def test_workflow_is_filterable_by_organisation_and_domain(
    org: OrgClient, temporal_client: Client
) -> None:
    trace_id = await org.submit(domain="healthcare")
    evaluation = await org.wait_for_evaluation(trace_id)
    query = f"AegisOrganizationId = '{org.organization_id}' AND AegisDomain = 'healthcare'"
    # Visibility is eventually consistent: wait for the completed status to be indexed.
    for _ in range(50):
        found = [
            w
            async for w in temporal_client.list_workflows(
                query + " AND AegisStatus IN ('completed', 'awaiting_review')"
            )
        ]
        if found:
            break
        await asyncio.sleep(0.1)
    assert [w.id for w in found] == [workflow_id_for(uuid.UUID(trace_id))]
    attributes = {pair.key.name: pair.value for pair in found[0].typed_search_attributes}
    assert attributes["AegisOrganizationId"] == org.organization_id
    assert attributes["AegisDomain"] == "healthcare"
    # Also for the 2 % of traces (by id) the healthcare pack sends to review
    # as an audit: the automated verdict's severity is written as they wait.
    assert attributes["AegisSeverity"] == evaluation["severity"] == "none"


async def test_status_query_reports_live_state(org: OrgClient, temporal_client: Client) -> None:
    trace_id = await org.submit()
    await org.wait_for_evaluation(trace_id)
    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
    await handle.result()  # the stored verdict comes a step before the workflow's end
    state = await handle.query("status", result_type=WorkflowState)
    assert state.status == "completed"
    assert [o.name for o in state.outcomes][:2] == ["sanitise", "rules"]
    assert state.verdict is not None and state.verdict.passed is True


async def test_resubmitting_an_external_id_gives_one_trace_and_one_workflow(
    org: OrgClient, temporal_client: Client
) -> None:
    body = {"model": "gpt-4", "input": "hi", "output": "hello", "domain": "generic", "external_id": "call-42"}
    first = await org.post("/api/v1/traces", json=body)
    second = await org.post("/api/v1/traces", json=body)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["trace_id"] == second.json()["trace_id"]
    assert second.json()["duplicate"] is True
    await org.wait_for_evaluation(first.json()["trace_id"])

    listing = (await org.get("/api/v1/traces")).json()
    assert [t["trace_id"] for t in listing["items"]] == [first.json()["trace_id"]]
    count = await temporal_client.count_workflows(f"AegisOrganizationId = '{org.organization_id}'")
    assert count.count == 1


async def test_batch_accepts_valid_items_and_names_invalid_ones(org: OrgClient) -> None:
    good = {"model": "m", "input": "q", "output": "a", "domain": "generic"}
    response = await org.post(
        "/api/v1/traces/batch",
        json={"traces": [good, {**good, "model": ""}, {**good, "external_id": "b-1"}, {"input": "x"}]},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    results = body["results"]
    assert [r["accepted"] for r in results] == [True, False, True, False]
    assert results[1]["errors"][0]["field"] == "body.traces.1.model"
    assert {e["field"] for e in results[3]["errors"]} == {
        "body.traces.3.model",
        "body.traces.3.output",
        "body.traces.3.domain",
    }
    for item in (results[0], results[2]):
        evaluation = await org.wait_for_evaluation(item["trace_id"])
        assert evaluation["status"] == "completed"


async def test_delete_removes_trace_and_evaluation(org: OrgClient) -> None:
    trace_id = await org.submit()
    await org.wait_for_evaluation(trace_id)
    assert (await org.delete(f"/api/v1/traces/{trace_id}")).status_code == 204
    assert (await org.get(f"/api/v1/traces/{trace_id}")).status_code == 404
    assert (await org.get(f"/api/v1/evaluations/{trace_id}")).status_code == 404
    listing = (await org.get("/api/v1/evaluations")).json()
    assert listing["items"] == []


async def test_lists_paginate_with_cursors_and_filter(org: OrgClient) -> None:
    ids = [
        await org.submit(domain="healthcare" if i % 2 else "generic", output=f"answer {i}") for i in range(5)
    ]
    for trace_id in ids:
        await org.wait_for_evaluation(trace_id)

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await org.get("/api/v1/traces", params=params)).json()
        seen += [t["trace_id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5

    healthcare = (await org.get("/api/v1/traces", params={"domain": "healthcare"})).json()["items"]
    assert {t["trace_id"] for t in healthcare} == {ids[1], ids[3]}

    evaluations = (await org.get("/api/v1/evaluations", params={"passed": "true", "limit": 3})).json()
    assert len(evaluations["items"]) == 3 and evaluations["next_cursor"]
    rest = (
        await org.get("/api/v1/evaluations", params={"passed": "true", "cursor": evaluations["next_cursor"]})
    ).json()
    assert {e["trace_id"] for e in evaluations["items"] + rest["items"]} == set(ids)

    bad = await org.get("/api/v1/traces", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"
