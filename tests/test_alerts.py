"""Alerts end to end: a critical verdict raises an alert that reaches a signed
webhook and a Slack-compatible one; a receiver that is down is retried,
recorded, and never holds the evaluation back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import Client

from core.alerts import MAX_DELIVERY_ATTEMPTS, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from core.embedded import free_port
from models.schemas import workflow_id_for
from tests.helpers import OrgClient, RecordingServer

pytestmark = pytest.mark.usefixtures("worker")

PACK = """
name: alerting
version: 1
display_name: Alerting
extends: generic
escalation:
  audit_sample_rate: 0.0
rules:
  - id: acme.forbidden
    kind: pattern
    category: safety
    severity: critical
    message: Mentions the forbidden project.
    patterns: ['\\bproject nightshade\\b']
"""


class Receiver(RecordingServer):
    """A webhook receiver on loopback that records what it gets."""

    def __init__(self, status: int = 200) -> None:
        super().__init__(lambda path, body: (status, {}, b""))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


async def publish_pack(org: OrgClient) -> None:
    response = await org.api.post(
        "/api/v1/domains", content=PACK, headers={**org.headers, "Content-Type": "application/yaml"}
    )
    assert response.status_code == 201, response.text


async def alerts_of(org: OrgClient, trace_id: str, until: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items = (await org.get("/api/v1/alerts", params={"trace_id": trace_id})).json()["items"]
        if items and all(item["delivery_status"] == until for item in items):
            return items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.1)


async def test_a_critical_verdict_alerts_signed_webhook_and_slack(org: OrgClient, receiver: Receiver) -> None:
    await publish_pack(org)
    webhook = await org.post(
        "/api/v1/alert-channels", json={"name": "pager", "kind": "webhook", "url": f"{receiver.url}/hook"}
    )
    assert webhook.status_code == 201, webhook.text
    secret = webhook.json()["secret"]
    assert secret.startswith("whsec_")
    slack = await org.post(
        "/api/v1/alert-channels", json={"name": "team", "kind": "slack", "url": f"{receiver.url}/slack"}
    )
    assert slack.status_code == 201 and slack.json()["secret"] is None
    listed = (await org.get("/api/v1/alert-channels")).json()
    assert {c["name"] for c in listed} == {"pager", "team"} and "secret" not in listed[0]

    trace_id = await org.submit(domain="alerting", input="Status?", output="Project Nightshade ships Monday.")
    [alert] = await alerts_of(org, trace_id, until="delivered")

    assert alert["severity"] == "critical" and alert["details"]["rule_ids"] == ["acme.forbidden"]
    assert [d["delivered"] for d in alert["deliveries"]] == [True, True]
    by_path = {request["path"]: request for request in receiver.requests}
    hook = by_path["/hook"]
    assert verify(secret, hook["headers"][TIMESTAMP_HEADER], hook["body"], hook["headers"][SIGNATURE_HEADER])
    assert not verify(
        "whsec_wrong", hook["headers"][TIMESTAMP_HEADER], hook["body"], hook["headers"][SIGNATURE_HEADER]
    )
    payload = json.loads(hook["body"])
    assert (payload["trace_id"], payload["severity"]) == (trace_id, "critical")
    assert "Nightshade" not in hook["body"].decode()  # ids and rule ids, never trace text
    assert "critical".upper() in json.loads(by_path["/slack"]["body"])["text"]

    acknowledged = await org.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"by": "oncall"})
    assert acknowledged.status_code == 200 and acknowledged.json()["acknowledged_by"] == "oncall"
    again = await org.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"by": "someone-else"})
    assert again.json()["acknowledged_by"] == "oncall"
    unacknowledged = (await org.get("/api/v1/alerts", params={"acknowledged": "false"})).json()["items"]
    assert alert["id"] not in [item["id"] for item in unacknowledged]


async def test_a_receiver_that_is_down_is_retried_recorded_and_does_not_block(org: OrgClient) -> None:
    await publish_pack(org)
    dead = f"http://127.0.0.1:{free_port()}/hook"
    assert (
        await org.post("/api/v1/alert-channels", json={"name": "dead", "kind": "webhook", "url": dead})
    ).status_code == 201

    trace_id = await org.submit(domain="alerting", input="Status?", output="Project Nightshade ships Monday.")
    evaluation = await org.wait_for_evaluation(trace_id)
    assert (evaluation["status"], evaluation["passed"]) == ("completed", False)

    [alert] = await alerts_of(org, trace_id, until="failed", timeout=40)
    attempts = [(d["attempt"], d["delivered"], d["error"]) for d in alert["deliveries"]]
    assert attempts == [(n, False, "ConnectError") for n in range(1, MAX_DELIVERY_ATTEMPTS + 1)]


async def test_bad_channels_and_unknown_alerts_are_4xx(org: OrgClient, other_org: OrgClient) -> None:
    for body, field in (
        ({"name": "x", "kind": "pager", "url": "https://example.com/h"}, "body.kind"),
        ({"name": "x", "kind": "webhook", "url": "ftp://example.com/h"}, "body.url"),
        ({"kind": "webhook", "url": "https://example.com/h"}, "body.name"),
    ):
        response = await org.post("/api/v1/alert-channels", json=body)
        assert response.status_code == 422 and field in response.text, response.text
    created = await org.post(
        "/api/v1/alert-channels", json={"name": "x", "kind": "webhook", "url": "https://example.com/h"}
    )
    channel_id = created.json()["id"]
    assert (await other_org.delete(f"/api/v1/alert-channels/{channel_id}")).status_code == 404
    assert (await org.delete(f"/api/v1/alert-channels/{channel_id}")).status_code == 204
    missing = await org.post(
        "/api/v1/alerts/00000000-0000-0000-0000-000000000000/acknowledge", json={"by": "x"}
    )
    assert missing.status_code == 404


async def test_an_expert_label_that_makes_a_trace_critical_alerts(org: OrgClient, receiver: Receiver) -> None:
    await publish_pack(org)
    created = await org.post(
        "/api/v1/alert-channels", json={"name": "pager", "kind": "webhook", "url": f"{receiver.url}/hook"}
    )
    assert created.status_code == 201
    trace_id = await org.submit(domain="alerting", input="Status?", output="All systems nominal.")
    assert (await org.wait_for_evaluation(trace_id))["passed"] is True

    label = await org.post(
        f"/api/v1/traces/{trace_id}/labels",
        json={"verdict": "fail", "severity": "critical", "reviewer": "dr.q"},
    )
    assert label.status_code == 200, label.text
    [alert] = await alerts_of(org, trace_id, until="delivered")
    assert (alert["kind"], alert["severity"], alert["details"]["reviewer"]) == (
        "expert_label",
        "critical",
        "dr.q",
    )
    assert json.loads(receiver.requests[-1]["body"])["kind"] == "expert_label"


async def test_only_a_trace_with_pending_alerts_runs_the_delivery_step(
    org: OrgClient, temporal_client: Client
) -> None:
    await publish_pack(org)
    quiet = await org.submit(domain="alerting", input="Status?", output="All projects are on schedule.")
    loud = await org.submit(domain="alerting", input="Status?", output="Project Nightshade ships Monday.")
    await alerts_of(org, loud, until="none")  # no channel configured: nothing to send it to
    for trace_id, expected in ((quiet, []), (loud, ["deliver_alerts"])):
        await org.wait_for_evaluation(trace_id)
        history = await temporal_client.get_workflow_handle(
            workflow_id_for(uuid.UUID(trace_id))
        ).fetch_history()
        activities = [
            event.activity_task_scheduled_event_attributes.activity_type.name
            for event in history.events
            if event.HasField("activity_task_scheduled_event_attributes")
        ]
        assert [name for name in activities if name == "deliver_alerts"] == expected, activities
        assert activities[-1 - len(expected)] == "persist_evaluation"
