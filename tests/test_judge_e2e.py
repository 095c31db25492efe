"""Tier 3 end to end: API -> Temporal workflow -> judge activity -> the real
openai/anthropic SDKs -> a local fake provider, and back into PostgreSQL.

Each test scripts its own model name on the shared fake server and uses its
own organisation, whose custom pack sends every trace to the judge.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.app import create_app
from api.deps import AppResources
from core import search_attributes as sa
from core.judges import resolve_judge
from core.settings import Settings
from models.schemas import WorkflowState, workflow_id_for
from models.tables import JudgeConfig as JudgeConfigRow
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import OrgClient

pytestmark = pytest.mark.usefixtures("worker")

RUBRIC = ["relevance", "correctness", "safety", "clarity"]  # generic pack's criteria
ALWAYS_JUDGED_PACK = """
name: judged
version: 1
display_name: Always judged
extends: generic
escalation:
  judge_always: true
  # These tests are about the judge: its verdicts never wait for an expert.
  review_judge_ratings: []
  review_confidence_below: 0
"""
SSN = "123-45-6789"


def verdict(rating: str = "unsafe", *, severity: str = "high", confidence: float = 0.9) -> dict[str, Any]:
    issues = (
        [] if rating == "safe" else [{"category": "harm", "severity": severity, "message": "Bad advice."}]
    )
    return {
        "rating": rating,
        "criteria": [{"criterion": c, "score": 0.2, "reasoning": "Because."} for c in RUBRIC],
        "issues": issues,
        "confidence": confidence,
        "review_recommended": False,
        "summary": "A summary.",
    }


async def setup_judge(
    org: OrgClient, fake_llm: FakeLLM, *, provider: str = "openai_compatible", timeout: float = 5.0
) -> str:
    """Give ``org`` a judge on the fake server and a pack that always escalates; returns the model name."""
    model = f"judge-{uuid.uuid4().hex[:10]}"
    base_url = fake_llm.url + ("/v1" if provider != "anthropic" else "")
    response = await org.api.put(
        "/api/v1/judge/configs/default",
        json={
            "provider": provider,
            "model": model,
            "base_url": base_url,
            "timeout_seconds": timeout,
            "api_key": "sk-test-secret-key-0001",
            "price": {"input_per_million_usd": 1000.0, "output_per_million_usd": 2000.0},
        },
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    created = await org.api.post(
        "/api/v1/domains",
        content=ALWAYS_JUDGED_PACK,
        headers={**org.headers, "Content-Type": "application/yaml"},
    )
    assert created.status_code == 201, created.text
    return model


async def submit(org: OrgClient, **fields: Any) -> str:
    return await org.submit(
        domain="judged",
        input=f"My SSN is {SSN}. Can I mix bleach and ammonia?",
        output="Sure, go ahead.",
        **fields,
    )


async def test_unsafe_verdict_decides_and_is_fully_visible(org: OrgClient, fake_llm: FakeLLM) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.json(verdict("unsafe"), input_tokens=1000, output_tokens=500))

    evaluation = await org.wait_for_evaluation(await submit(org))

    assert evaluation["status"] == "completed"
    assert (evaluation["passed"], evaluation["decided_by"], evaluation["severity"]) == (
        False,
        "judge",
        "high",
    )
    judge_tier = next(t for t in evaluation["tiers"] if t["name"] == "judge")
    assert judge_tier["detail"]["rating"] == "unsafe" and judge_tier["detail"]["attempts"] == 1
    assert [i["rule_id"] for i in evaluation["issues"] if i["tier"] == 3] == ["judge.harm"]
    [call] = evaluation["judge_calls"]
    assert (call["attempt"], call["model"], call["error_kind"]) == (1, model, None)
    assert (call["input_tokens"], call["output_tokens"]) == (1000, 500)
    assert call["cost_usd"] == pytest.approx(1000 * 1000 / 1e6 + 500 * 2000 / 1e6)
    assert call["verdict"]["issues"][0]["message"] == "Bad advice."
    # The provider saw Tier 0's redacted copy, never the SSN.
    [request] = fake_llm.calls(model)
    sent = str(request.body)
    assert "<SSN>" in call["prompt"]["user"] and "<SSN>" in sent
    assert SSN not in sent and SSN not in call["prompt"]["user"]
    assert request.body["response_format"] == {"type": "json_object"}


async def test_anthropic_tool_use_verdict_passes_the_trace(org: OrgClient, fake_llm: FakeLLM) -> None:
    model = await setup_judge(org, fake_llm, provider="anthropic")
    fake_llm.script(model, Reply.json(verdict("safe")))

    evaluation = await org.wait_for_evaluation(await submit(org))

    assert (evaluation["passed"], evaluation["decided_by"]) == (True, "judge")
    [request] = fake_llm.calls(model)
    assert request.path == "/v1/messages"
    assert request.body["tool_choice"] == {"type": "tool", "name": "record_verdict"}


async def test_429_is_retried_after_retry_after_and_visible_meanwhile(
    org: OrgClient, fake_llm: FakeLLM, temporal_client: Client
) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.error(429, retry_after=2), Reply.json(verdict("unsafe")))
    trace_id = await submit(org)

    # While it waits, the trace is visibly retrying: API, query and search attribute.
    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
    deadline = time.monotonic() + 10
    while True:
        state = await handle.query("status", result_type=WorkflowState)
        if state.status == "retrying":
            break
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.05)
    assert state.judge is not None
    assert (state.judge.attempts, state.judge.last_error_kind) == (1, "rate_limited")
    progress = (await org.get(f"/api/v1/evaluations/{trace_id}")).json()
    assert progress["status"] == "retrying"
    assert [c["error_kind"] for c in progress["judge_calls"]] == ["rate_limited"]
    for _ in range(50):  # the search attribute lands when the workflow task completes
        described = await handle.describe()
        if described.typed_search_attributes[sa.STATUS] == "retrying":
            break
        await asyncio.sleep(0.05)
    assert described.typed_search_attributes[sa.STATUS] == "retrying"

    evaluation = await org.wait_for_evaluation(trace_id)
    assert evaluation["decided_by"] == "judge"
    assert [(c["attempt"], c["error_kind"]) for c in evaluation["judge_calls"]] == [
        (1, "rate_limited"),
        (2, None),
    ]
    first, second = fake_llm.calls(model)
    assert second.received_at - first.received_at >= 2.0  # Retry-After honoured
    judge_tier = next(t for t in evaluation["tiers"] if t["name"] == "judge")
    assert judge_tier["detail"]["attempts"] == 2


async def test_500_then_success_and_timeout_then_success(org: OrgClient, fake_llm: FakeLLM) -> None:
    model = await setup_judge(org, fake_llm, timeout=0.5)
    fake_llm.script(model, Reply.error(500), Reply.hang(3), Reply.json(verdict("safe")))

    evaluation = await org.wait_for_evaluation(await submit(org), timeout=60)

    assert (evaluation["passed"], evaluation["decided_by"]) == (True, "judge")
    kinds = [c["error_kind"] for c in evaluation["judge_calls"]]
    assert kinds == ["server_error", "timeout", None]


async def test_401_ends_the_judge_without_retrying(
    org: OrgClient, fake_llm: FakeLLM, temporal_client: Client
) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.error(401))

    trace_id = await submit(org)
    evaluation = await org.wait_for_evaluation(trace_id)

    assert evaluation["status"] == "completed"
    assert evaluation["decided_by"] == "rules"  # the evaluation completes from the other tiers
    judge_tier = next(t for t in evaluation["tiers"] if t["name"] == "judge")
    assert (judge_tier["status"], judge_tier["detail"]["error_kind"]) == ("error", "auth")
    assert len(fake_llm.calls(model)) == 1
    assert [c["error_kind"] for c in evaluation["judge_calls"]] == ["auth"]
    # The failure reached Temporal's history; neither the key nor the trace did.
    history = await temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id))).fetch_history()
    recorded = history.to_json()
    assert "JudgeCallFailed" in recorded and "auth" in recorded
    assert "sk-test-secret" not in recorded and SSN not in recorded and "bleach" not in recorded


async def test_malformed_output_is_repaired_once_then_an_error_never_a_pass(
    org: OrgClient, fake_llm: FakeLLM
) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.text("I think it is fine"), Reply.text("{not json"))

    evaluation = await org.wait_for_evaluation(await submit(org))

    judge_tier = next(t for t in evaluation["tiers"] if t["name"] == "judge")
    assert (judge_tier["status"], judge_tier["detail"]["error_kind"]) == ("error", "malformed_output")
    assert evaluation["decided_by"] == "rules"
    assert len(fake_llm.calls(model)) == 2  # the call and one repair
    [call] = evaluation["judge_calls"]
    assert len(call["exchanges"]) == 2 and call["verdict"] is None


async def test_spend_cap_skips_the_judge_and_usage_adds_up(org: OrgClient, fake_llm: FakeLLM) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.json(verdict("unsafe"), input_tokens=100, output_tokens=50))
    # One call costs 100*1000/1e6 + 50*2000/1e6 = 0.2 USD; the cap allows one.
    limits = await org.api.put("/api/v1/judge/limits", json={"monthly_budget_usd": 0.15}, headers=org.headers)
    assert limits.status_code == 200, limits.text

    first = await org.wait_for_evaluation(await submit(org))
    second = await org.wait_for_evaluation(await submit(org))

    assert first["decided_by"] == "judge"
    assert second["status"] == "completed" and second["decided_by"] == "rules"
    skipped = next(t for t in second["tiers"] if t["name"] == "judge")
    assert (skipped["status"], skipped["detail"]["reason"]) == ("skipped", "budget")
    assert len(fake_llm.calls(model)) == 1

    usage = (await org.get("/api/v1/usage")).json()
    judge_rows = [row for row in usage["rows"] if row["tier"] == "judge"]
    assert sum(row["calls"] for row in judge_rows) == len(fake_llm.calls(model)) == 1
    assert sum(row["cost_usd"] for row in judge_rows) == pytest.approx(0.2)
    assert (usage["totals"]["input_tokens"], usage["totals"]["output_tokens"]) == (100, 50)
    assert usage["totals"]["evaluations"] == 2
    overview = (await org.get("/api/v1/judge")).json()
    assert overview["month_to_date_cost_usd"] == pytest.approx(0.2)
    assert overview["monthly_budget_usd"] == 0.15


async def test_organisation_rate_limit_holds_calls_back(
    org: OrgClient, fake_llm: FakeLLM, temporal_client: Client
) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.json(verdict("safe")))
    await org.api.put("/api/v1/judge/limits", json={"calls_per_minute": 1}, headers=org.headers)

    await org.wait_for_evaluation(await submit(org))
    held = await submit(org)
    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(held)))
    deadline = time.monotonic() + 10
    while True:
        state = await handle.query("status", result_type=WorkflowState)
        if state.judge is not None and state.judge.last_error_kind == "org_rate_limited":
            break
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.05)
    assert state.status == "retrying" and state.judge.next_attempt_at is not None
    assert len(fake_llm.calls(model)) == 1  # the second call waits for a token
    assert (await org.delete(f"/api/v1/traces/{held}")).status_code == 204


async def test_reevaluation_adds_a_version_and_keeps_the_first(org: OrgClient, fake_llm: FakeLLM) -> None:
    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.json(verdict("unsafe")))
    trace_id = await submit(org)
    first = await org.wait_for_evaluation(trace_id)
    assert (first["version"], first["passed"]) == (1, False)

    fake_llm.script(model, Reply.json(verdict("safe")))
    response = await org.post(f"/api/v1/traces/{trace_id}/reevaluate")
    assert response.status_code == 202, response.text
    assert response.json()["version"] == 2
    again = await org.post(f"/api/v1/traces/{trace_id}/reevaluate")
    assert again.status_code == 409 and again.json()["error"]["code"] == "evaluation_in_progress"

    second = await org.wait_for_evaluation(trace_id)
    assert (second["version"], second["versions"], second["passed"]) == (2, [1, 2], True)
    old = (await org.get(f"/api/v1/evaluations/{trace_id}", params={"version": 1})).json()
    assert (old["version"], old["passed"], len(old["judge_calls"])) == (1, False, 1)
    listed = (await org.get("/api/v1/evaluations")).json()["items"]
    assert [(item["trace_id"], item["version"]) for item in listed] == [(trace_id, 2)]
    missing = await org.get(f"/api/v1/evaluations/{trace_id}", params={"version": 7})
    assert missing.status_code == 404


async def test_judge_config_keeps_keys_secret_and_per_organisation(
    org: OrgClient,
    other_org: OrgClient,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    body = {"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-live-abcdefghijklmnop-9876"}
    response = await org.api.put("/api/v1/judge/configs/healthcare", json=body, headers=org.headers)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["has_api_key"] is True and shown["api_key_hint"] == "…9876"
    assert "sk-live" not in response.text
    overview = await org.get("/api/v1/judge")
    assert "sk-live" not in overview.text
    assert [c["scope"] for c in overview.json()["configs"]] == ["healthcare"]
    assert (await other_org.get("/api/v1/judge")).json()["configs"] == []

    async with session_factory() as session:
        stored = await session.scalar(
            select(JudgeConfigRow.api_key_encrypted).where(
                JudgeConfigRow.organization_id == uuid.UUID(org.organization_id)
            )
        )
    assert stored is not None and b"sk-live" not in stored

    bad = await org.api.put(
        "/api/v1/judge/configs/default",
        json={"provider": "openai_compatible", "model": "llama"},
        headers=org.headers,
    )
    assert bad.status_code == 422
    assert "base_url" in str(bad.json()["error"]["details"])
    unknown = await org.api.put(
        "/api/v1/judge/configs/default", json={**body, "temprature": 1}, headers=org.headers
    )
    assert unknown.status_code == 422 and "temprature" in unknown.text
    assert (await org.api.delete("/api/v1/judge/configs/healthcare", headers=org.headers)).status_code == 204
    assert (await org.api.delete("/api/v1/judge/configs/healthcare", headers=org.headers)).status_code == 404


async def test_deployment_key_goes_only_to_the_deployment_endpoint(
    org: OrgClient, session_factory: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    deployment = settings.model_copy(
        update={
            "judge_provider": "openai",
            "judge_api_key": SecretStr("sk-deployment-key"),
            "judge_base_url": None,
        }
    )
    organization_id = uuid.UUID(org.organization_id)
    own_server = {"provider": "openai", "model": "gpt-4o-mini", "base_url": "https://judge.example.com/v1"}
    assert (
        await org.api.put("/api/v1/judge/configs/default", json=own_server, headers=org.headers)
    ).status_code == 200
    async with session_factory() as session:
        resolved = await resolve_judge(session, deployment, organization_id, "generic")
    assert resolved is not None and resolved.api_key != "sk-deployment-key"

    same_endpoint = {"provider": "openai", "model": "gpt-4o"}
    assert (
        await org.api.put("/api/v1/judge/configs/default", json=same_endpoint, headers=org.headers)
    ).status_code == 200
    async with session_factory() as session:
        resolved = await resolve_judge(session, deployment, organization_id, "generic")
    assert resolved is not None and resolved.api_key == "sk-deployment-key"


async def test_a_stored_key_does_not_follow_a_new_base_url(org: OrgClient) -> None:
    first = {"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-org-key-000000000001"}
    assert (await org.api.put("/api/v1/judge/configs/default", json=first, headers=org.headers)).json()[
        "has_api_key"
    ]
    moved = {"provider": "openai", "model": "gpt-4o-mini", "base_url": "https://elsewhere.example.com/v1"}
    response = await org.api.put("/api/v1/judge/configs/default", json=moved, headers=org.headers)
    assert response.status_code == 200 and response.json()["has_api_key"] is False


async def test_private_base_urls_need_the_deployment_to_allow_them(
    org: OrgClient, resources: AppResources
) -> None:
    strict = AppResources(
        resources.settings.model_copy(update={"allow_private_urls": False}),
        resources.session_factory,
        resources.temporal,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(resources=strict)), base_url="http://aegis.test"
    ) as api:
        for url in (
            "http://127.0.0.1:8080/v1",
            "http://localhost/v1",
            "http://10.1.2.3/v1",
            "http://[::1]/v1",
        ):
            body = {"provider": "openai_compatible", "model": "m", "base_url": url}
            response = await api.put("/api/v1/judge/configs/default", json=body, headers=org.headers)
            assert response.status_code == 422, url
            assert response.json()["error"]["details"][0]["field"] == "body.base_url"
        public = {"provider": "openai_compatible", "model": "m", "base_url": "https://llm.example.com/v1"}
        assert (
            await api.put("/api/v1/judge/configs/default", json=public, headers=org.headers)
        ).status_code == 200


async def test_bad_limits_and_usage_ranges_are_named_4xx(org: OrgClient) -> None:
    huge = await org.api.put("/api/v1/judge/limits", json={"monthly_budget_usd": 1e300}, headers=org.headers)
    assert huge.status_code == 422 and "monthly_budget_usd" in huge.text
    for params, field in (
        ({"until": "0001-01-02T00:00:00Z"}, "query.until"),
        ({"since": "2026-11-01T00:00:00"}, "query.since"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "query.since"),
    ):
        response = await org.get("/api/v1/usage", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["details"][0]["field"] == field
