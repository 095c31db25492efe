"""Tier 4 end to end: expert review through the API (Temporal update), a raw
Temporal signal, labels after completion, deadlines, and the audit trail."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from core import search_attributes as sa
from models.schemas import WorkflowState, workflow_id_for
from tests.helpers import OrgClient

pytestmark = pytest.mark.usefixtures("worker")


def reviewed_pack(name: str, deadline_hours: float = 48) -> str:
    """A pack that sends every trace to an expert (audit sample of 1)."""
    return f"""
name: {name}
version: 1
display_name: Always reviewed
extends: generic
risk_level: high
escalation:
  audit_sample_rate: 1.0
  review_deadline_hours: {deadline_hours}
"""


async def submit_for_review(org: OrgClient, deadline_hours: float = 48) -> str:
    response = await org.api.post(
        "/api/v1/domains",
        content=reviewed_pack("reviewed", deadline_hours),
        headers={**org.headers, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text
    trace_id = await org.submit(domain="reviewed", input="Is it safe?", output="Yes, it is perfectly safe.")
    evaluation = await org.wait_for_evaluation(trace_id)
    assert evaluation["status"] == "awaiting_review", evaluation
    return trace_id


async def evaluation(org: OrgClient, trace_id: str) -> dict[str, Any]:
    response = await org.get(f"/api/v1/evaluations/{trace_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_until(check, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_api_label_overrides_the_automated_verdict_with_an_audit_trail(
    org: OrgClient, temporal_client: Client
) -> None:
    trace_id = await submit_for_review(org)
    waiting = await evaluation(org, trace_id)
    assert (waiting["passed"], waiting["decided_by"]) == (True, "rules")
    assert waiting["review"]["status"] == "pending" and waiting["review"]["reason"] == "audit_sample"
    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))

    async def searchable() -> bool:
        # Search attributes reach visibility a moment after the workflow sets them.
        described = await handle.describe()
        return described.typed_search_attributes[sa.STATUS] == "awaiting_review"

    await wait_until(searchable)
    attributes = (await handle.describe()).typed_search_attributes
    # Filterable by tier and by the automated verdict's severity while it waits.
    assert (attributes[sa.TIER], attributes[sa.SEVERITY]) == ("expert", waiting["severity"])

    response = await org.post(
        f"/api/v1/traces/{trace_id}/labels",
        json={
            "verdict": "fail",
            "severity": "critical",
            "issues": [{"category": "false_reassurance", "severity": "critical", "message": "Unfounded."}],
            "notes": "Patient-specific risk ignored.",
            "reviewer": "dr.smith",
        },
    )
    assert response.status_code == 200, response.text
    applied = response.json()
    assert applied["verdict"] == {"passed": False, "severity": "critical", "decided_by": "expert"}
    assert (applied["changed"], applied["labels"], applied["disagreement"]) == (True, 1, False)

    done = await evaluation(org, trace_id)
    assert (done["status"], done["passed"], done["decided_by"]) == ("completed", False, "expert")
    assert done["review"]["status"] == "labelled"
    [label] = done["labels"]
    assert (label["reviewer"], label["notes"], label["source"]) == (
        "dr.smith",
        "Patient-specific risk ignored.",
        "api",
    )
    history = [(h["reason"], h["changed_by"], h["to_verdict"]["decided_by"]) for h in done["verdict_history"]]
    assert history == [("automated", "aegis", "rules"), ("expert_label", "dr.smith", "expert")]
    assert done["verdict_history"][1]["from_verdict"]["decided_by"] == "rules"
    result = await handle.result()
    assert result is not None
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    # Notes never travel through Temporal.
    assert "Patient-specific" not in (await handle.fetch_history()).to_json()


async def test_signal_from_the_cli_labels_the_trace(org: OrgClient, temporal_client: Client) -> None:
    trace_id = await submit_for_review(org)
    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
    # What `temporal workflow signal --name expert_label --input '{...}'` sends; a bad one first.
    await handle.signal("expert_label", {"verdict": "maybe", "reviewer": "x"})
    await handle.signal("expert_label", {"verdict": "fail", "severity": "high", "reviewer": "operator.kim"})
    await handle.result()

    done = await evaluation(org, trace_id)
    assert (done["passed"], done["severity"], done["decided_by"]) == (False, "high", "expert")
    assert [(label["reviewer"], label["source"]) for label in done["labels"]] == [("operator.kim", "signal")]
    assert done["verdict_history"][-1]["changed_by"] == "operator.kim"


async def test_a_second_opinion_after_completion_applies_durably(
    org: OrgClient, temporal_client: Client
) -> None:
    trace_id = await submit_for_review(org)
    first = await org.post(f"/api/v1/traces/{trace_id}/labels", json={"verdict": "fail", "reviewer": "dr.a"})
    assert first.status_code == 200, first.text
    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
    await handle.result()  # the evaluation is over

    second = await org.post(f"/api/v1/traces/{trace_id}/labels", json={"verdict": "pass", "reviewer": "dr.b"})
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["verdict"]["passed"] is True and (body["labels"], body["disagreement"]) == (2, True)

    done = await evaluation(org, trace_id)
    assert (done["passed"], done["decided_by"], done["disagreement"]) == (True, "expert", True)
    assert [label["reviewer"] for label in done["labels"]] == ["dr.a", "dr.b"]
    assert [h["changed_by"] for h in done["verdict_history"]] == ["aegis", "dr.a", "dr.b"]
    # The label ran as a new run of the same workflow id.
    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) == 2


async def test_a_trace_nobody_reviews_expires_with_the_automated_verdict(org: OrgClient) -> None:
    trace_id = await submit_for_review(org, deadline_hours=0.0005)  # 1.8 seconds

    async def expired() -> dict[str, Any] | None:
        body = await evaluation(org, trace_id)
        return body if body["status"] == "completed" else None

    done = await wait_until(expired)
    assert (done["passed"], done["decided_by"]) == (True, "rules")
    assert done["review"]["status"] == "expired"
    expert = next(t for t in done["tiers"] if t["name"] == "expert")
    assert expert["status"] == "expired"
    # A label afterwards still applies (a late review).
    late = await org.post(
        f"/api/v1/traces/{trace_id}/labels", json={"verdict": "fail", "reviewer": "dr.late"}
    )
    assert late.status_code == 200 and late.json()["verdict"]["decided_by"] == "expert"


async def test_invalid_labels_are_refused_and_leave_the_workflow_waiting(
    org: OrgClient, other_org: OrgClient, temporal_client: Client
) -> None:
    trace_id = await submit_for_review(org)
    bad = [
        ({"verdict": "maybe", "reviewer": "x"}, 422, "body.verdict"),
        ({"verdict": "fail"}, 422, "body.reviewer"),
        ({"verdict": "pass", "severity": "critical", "reviewer": "x"}, 422, "body.severity"),
        ({"verdict": "fail", "reviewer": "x", "colour": "red"}, 422, "body.colour"),
    ]
    for body, status, field in bad:
        response = await org.post(f"/api/v1/traces/{trace_id}/labels", json=body)
        assert response.status_code == status, (body, response.text)
        assert field in str(response.json()["error"]["details"]), response.text
    elsewhere = await other_org.post(
        f"/api/v1/traces/{trace_id}/labels", json={"verdict": "fail", "reviewer": "x"}
    )
    assert elsewhere.status_code == 404
    missing = await org.post(
        f"/api/v1/traces/{uuid.uuid4()}/labels", json={"verdict": "fail", "reviewer": "x"}
    )
    assert missing.status_code == 404

    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
    state = await handle.query("status", result_type=WorkflowState)
    assert (state.status, state.labels, state.review_reason) == ("awaiting_review", 0, "audit_sample")
    still = await evaluation(org, trace_id)
    assert still["labels"] == [] and still["review"]["status"] == "pending"


async def test_a_trace_still_being_evaluated_cannot_be_labelled(org: OrgClient) -> None:
    trace_id = await org.submit(domain="no-such-domain-yet")
    await org.wait_for_evaluation(trace_id)  # unknown domain: settled by Tier 0
    # Completed without review: a label still applies (an expert may always override).
    response = await org.post(f"/api/v1/traces/{trace_id}/labels", json={"verdict": "fail", "reviewer": "x"})
    assert response.status_code == 200, response.text
    assert response.json()["verdict"]["decided_by"] == "expert"
