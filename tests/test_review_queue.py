"""The review queue: priority order, filters, claims, and review statistics,
against real PostgreSQL and Temporal. Every trace lands in review through a
pack that audits all of them (audit sample of 1)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.routes.reviews import CLAIM_TTL
from models.schemas import workflow_id_for
from models.tables import EvaluationResult, ReviewRequest
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import OrgClient

pytestmark = pytest.mark.usefixtures("worker")

HARMLESS = "Yes, it is perfectly safe."
# A valid US SSN: the generic pack's PII rule rates it high.
LEAKS_SSN = "Sure. My SSN is 219-09-9999."


async def publish_pack(
    org: OrgClient, name: str, *, risk_level: str = "high", deadline_hours: float = 48, extra: str = ""
) -> None:
    """A pack extending generic that sends every trace to an expert."""
    pack = f"""
name: {name}
version: 1
display_name: Always reviewed
extends: generic
risk_level: {risk_level}
escalation:
  audit_sample_rate: 1.0
  review_deadline_hours: {deadline_hours}
{extra}
"""
    response = await org.api.post(
        "/api/v1/domains", content=pack, headers={**org.headers, "Content-Type": "application/yaml"}
    )
    assert response.status_code == 201, response.text


async def in_review(org: OrgClient, domain: str, output: str = HARMLESS) -> str:
    trace_id = await org.submit(domain=domain, input="Is it safe?", output=output)
    evaluation = await org.wait_for_evaluation(trace_id)
    assert evaluation["status"] == "awaiting_review", evaluation
    return trace_id


async def queue(org: OrgClient, **params: Any) -> list[dict[str, Any]]:
    response = await org.get("/api/v1/reviews", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def stats(org: OrgClient, **params: Any) -> dict[str, Any]:
    response = await org.get("/api/v1/reviews/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def label(org: OrgClient, trace_id: str, verdict: str, reviewer: str = "dr.x") -> None:
    response = await org.post(
        f"/api/v1/traces/{trace_id}/labels", json={"verdict": verdict, "reviewer": reviewer}
    )
    assert response.status_code == 200, response.text


async def test_queue_is_ordered_by_severity_then_risk_then_age(org: OrgClient) -> None:
    await publish_pack(org, "low-risk", risk_level="low")
    await publish_pack(org, "top-risk", risk_level="critical")
    older = await in_review(org, "low-risk")
    top_risk = await in_review(org, "top-risk")
    leak = await in_review(org, "low-risk", output=LEAKS_SSN)
    newer = await in_review(org, "low-risk")

    items = await queue(org)
    assert [item["trace_id"] for item in items] == [leak, top_risk, older, newer]
    by_id = {item["trace_id"]: item for item in items}
    assert by_id[leak]["severity"] == "high"
    assert by_id[leak]["automated"] == {"passed": False, "decided_by": "rules"}
    harmless = {by_id[t]["severity"] for t in (older, top_risk, newer)}
    assert len(harmless) == 1 and harmless < {"none", "low"}
    assert [by_id[t]["risk_level"] for t in (leak, top_risk, older)] == ["low", "critical", "low"]
    first = by_id[older]
    assert first["workflow_id"] == workflow_id_for(uuid.UUID(older))
    assert (first["version"], first["domain"], first["reason"]) == (1, "low-risk", "audit_sample")
    assert (first["claimed_by"], first["claimed_at"]) == (None, None)
    assert first["automated"] == {"passed": True, "decided_by": "rules"}

    assert [item["trace_id"] for item in await queue(org, domain="top-risk")] == [top_risk]
    assert [item["trace_id"] for item in await queue(org, limit=2)] == [leak, top_risk]
    assert await queue(org, domain="nothing-here") == []

    # A labelled trace leaves the queue.
    await label(org, leak, "fail")
    assert [item["trace_id"] for item in await queue(org)] == [top_risk, older, newer]


async def test_claims_are_exclusive_until_released_or_stale(
    org: OrgClient, other_org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await publish_pack(org, "reviewed")
    trace_id = await in_review(org, "reviewed")
    claim = f"/api/v1/reviews/{trace_id}/claim"
    unclaim = f"/api/v1/reviews/{trace_id}/unclaim"

    # Two reviewers at once: exactly one wins.
    racing = await asyncio.gather(*(org.post(claim, json={"reviewer": r}) for r in ("dr.y", "dr.z")))
    assert sorted(response.status_code for response in racing) == [200, 409]
    winner = next(response.json()["claimed_by"] for response in racing if response.status_code == 200)
    assert (await org.post(unclaim, json={"reviewer": winner})).status_code == 200

    taken = await org.post(claim, json={"reviewer": "dr.a"})
    assert taken.status_code == 200, taken.text
    assert (taken.json()["trace_id"], taken.json()["claimed_by"]) == (trace_id, "dr.a")
    assert taken.json()["claimed_at"] is not None
    assert [item["claimed_by"] for item in await queue(org, claimed=True)] == ["dr.a"]
    assert await queue(org, claimed=False) == []

    refused = await org.post(claim, json={"reviewer": "dr.b"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "review_claimed"
    assert "dr.a" in refused.json()["error"]["message"]
    assert (await org.post(claim, json={"reviewer": "dr.a"})).status_code == 200  # renewing is fine
    not_theirs = await org.post(unclaim, json={"reviewer": "dr.b"})
    assert (not_theirs.status_code, not_theirs.json()["error"]["code"]) == (409, "review_claimed")

    released = await org.post(unclaim, json={"reviewer": "dr.a"})
    assert released.status_code == 200, released.text
    assert (released.json()["claimed_by"], released.json()["claimed_at"]) == (None, None)
    again = await org.post(unclaim, json={"reviewer": "dr.a"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "review_not_claimed")
    assert (await org.post(claim, json={"reviewer": "dr.b"})).json()["claimed_by"] == "dr.b"

    # dr.b walks away: once the claim is older than the TTL it no longer blocks.
    async with session_factory() as session, session.begin():
        await session.execute(
            update(ReviewRequest)
            .where(ReviewRequest.trace_id == uuid.UUID(trace_id))
            .values(claimed_at=dt.datetime.now(dt.UTC) - CLAIM_TTL - dt.timedelta(seconds=5))
        )
    assert [item["claimed_by"] for item in await queue(org, claimed=False)] == [None]
    stale_taken = await org.post(claim, json={"reviewer": "dr.c"})
    assert (stale_taken.status_code, stale_taken.json()["claimed_by"]) == (200, "dr.c")

    # Another organisation's trace, an unknown one, and a labelled one: 404.
    for client, path in [
        (other_org, claim),
        (other_org, unclaim),
        (org, f"/api/v1/reviews/{uuid.uuid4()}/claim"),
    ]:
        response = await client.post(path, json={"reviewer": "dr.a"})
        assert (response.status_code, response.json()["error"]["code"]) == (404, "review_not_found")
    assert await queue(other_org) == []
    await label(org, trace_id, "pass")
    assert (await org.post(claim, json={"reviewer": "dr.c"})).status_code == 404


async def test_stats_count_reviews_and_measure_agreement(org: OrgClient) -> None:
    await publish_pack(org, "fast", deadline_hours=0.0003)  # about a second
    await publish_pack(org, "reviewed")
    labelled = await in_review(org, "reviewed")
    await in_review(org, "reviewed")
    empty = await stats(org)
    assert (empty["pending"], empty["labelled"], empty["median_seconds_to_label"]) == (2, 0, None)
    assert empty["agreement"] == {"automated": {"compared": 0, "agreed": 0, "rate": None}}

    await in_review(org, "fast")
    started = time.monotonic()
    # The automated tiers passed it; the expert fails it.
    await label(org, labelled, "fail")
    while (body := await stats(org))["expired"] == 0:
        assert time.monotonic() - started < 10, "the review did not expire"
        await asyncio.sleep(0.1)
    assert (body["pending"], body["labelled"], body["expired"]) == (1, 1, 1)
    assert body["median_seconds_to_label"] > 0
    assert body["agreement"] == {"automated": {"compared": 1, "agreed": 0, "rate": 0.0}}

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    window = await stats(org, since=later)
    assert (window["pending"], window["labelled"], window["expired"]) == (0, 0, 0)
    assert window["median_seconds_to_label"] is None
    assert window["agreement"] == {"automated": {"compared": 0, "agreed": 0, "rate": None}}
    everything = await stats(org, until=later)
    assert everything["labelled"] == 1


JUDGED = """
  judge_always: true
  review_judge_ratings: [unsafe]
  review_confidence_below: 0
"""
RUBRIC = ["relevance", "correctness", "safety", "clarity"]  # the generic pack's criteria


def judge_verdict(rating: str) -> dict[str, Any]:
    issues = [] if rating == "safe" else [{"category": "harm", "severity": "high", "message": "Bad."}]
    return {
        "rating": rating,
        "criteria": [{"criterion": c, "score": 0.5, "reasoning": "Because."} for c in RUBRIC],
        "issues": issues,
        "confidence": 0.9,
        "review_recommended": False,
        "summary": "A summary.",
    }


async def test_agreement_is_reported_per_tier_that_rated_the_trace(org: OrgClient, fake_llm: FakeLLM) -> None:
    model = f"judge-{uuid.uuid4().hex[:10]}"
    response = await org.api.put(
        "/api/v1/judge/configs/default",
        json={
            "provider": "openai_compatible",
            "model": model,
            "base_url": fake_llm.url + "/v1",
            "api_key": "sk-test-secret-key-0001",
        },
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    await publish_pack(org, "judged", extra=JUDGED)
    fake_llm.script(model, Reply.json(judge_verdict("safe")), Reply.json(judge_verdict("unsafe")))
    judged_safe = await in_review(org, "judged")
    judged_unsafe = await in_review(org, "judged")

    # Both fail: the expert disagrees with the judge once and agrees once.
    await label(org, judged_safe, "fail")
    await label(org, judged_unsafe, "fail")
    agreement = (await stats(org))["agreement"]
    assert agreement["judge"] == {"compared": 2, "agreed": 1, "rate": 0.5}
    assert agreement["automated"] == {"compared": 2, "agreed": 1, "rate": 0.5}
    assert "expert" not in agreement and "rules" not in agreement


async def rate(
    session_factory: async_sessionmaker[AsyncSession], trace_id: str, risk: float | None, judge: bool | None
) -> None:
    """Give a trace's evaluation what Tier 2 and the judge would have said
    (a completed entry each in its ``tiers``)."""
    added: list[dict[str, Any]] = []
    if risk is not None:
        added.append({"tier": 2, "name": "classifier", "status": "completed", "detail": {"risk": risk}})
    if judge is not None:
        added.append({"tier": 3, "name": "judge", "status": "completed", "passed": judge})
    async with session_factory() as session, session.begin():
        result = await session.scalar(
            select(EvaluationResult).where(EvaluationResult.trace_id == uuid.UUID(trace_id))
        )
        assert result is not None
        result.tiers = [*result.tiers, *added]


async def test_reviews_that_teach_the_classifier_most_come_first(
    org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await publish_pack(org, "learning")
    # Oldest first, so that age alone would give the opposite order.
    unscored, unsure_alone, unsure, disputed = [await in_review(org, "learning") for _ in range(4)]
    await rate(session_factory, unscored, None, None)
    await rate(session_factory, unsure_alone, 0.2, None)
    await rate(session_factory, unsure, 0.52, False)  # both say unsafe, Tier 2 barely
    await rate(session_factory, disputed, 0.9, True)  # Tier 2 says unsafe, the judge passed it

    items = await queue(org)
    assert [item["trace_id"] for item in items] == [disputed, unsure, unsure_alone, unscored]
    by_id = {item["trace_id"]: item for item in items}
    assert (by_id[disputed]["classifier_risk"], by_id[disputed]["judge_passed"]) == (0.9, True)
    assert [by_id[t]["disagreement"] for t in (disputed, unsure, unsure_alone, unscored)] == [
        True,
        False,
        False,
        False,
    ]
    assert (by_id[unscored]["classifier_risk"], by_id[unscored]["judge_passed"]) == (None, None)

    # The expert fails both rated ones: Tier 2 (unsafe from 0.5) agrees twice;
    # against the judge, over all four evaluations, it agrees once in two.
    await label(org, disputed, "fail")
    await label(org, unsure, "fail")
    agreement = (await stats(org))["agreement"]
    assert agreement["classifier"] == {"compared": 2, "agreed": 2, "rate": 1.0}
    assert agreement["classifier_vs_judge"] == {"compared": 2, "agreed": 1, "rate": 0.5}
    assert agreement["judge"] == {"compared": 2, "agreed": 1, "rate": 0.5}


async def test_invalid_requests_name_the_field(org: OrgClient) -> None:
    trace = uuid.uuid4()
    bad_posts = [
        (f"/api/v1/reviews/{trace}/claim", {}, "body.reviewer"),
        (f"/api/v1/reviews/{trace}/claim", {"reviewer": ""}, "body.reviewer"),
        (f"/api/v1/reviews/{trace}/claim", {"reviewer": "x" * 201}, "body.reviewer"),
        (f"/api/v1/reviews/{trace}/unclaim", {"reviewer": "x", "colour": "red"}, "body.colour"),
        ("/api/v1/reviews/not-a-uuid/claim", {"reviewer": "x"}, "path.trace_id"),
    ]
    for path, body, field in bad_posts:
        response = await org.post(path, json=body)
        assert response.status_code == 422, (path, body, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert field in [detail["field"] for detail in error["details"]], response.text
    bad_gets = [
        ("/api/v1/reviews", {"limit": 0}, "query.limit"),
        ("/api/v1/reviews", {"limit": 201}, "query.limit"),
        ("/api/v1/reviews", {"claimed": "maybe"}, "query.claimed"),
        ("/api/v1/reviews", {"domain": "Not A Domain!"}, "query.domain"),
        ("/api/v1/reviews/stats", {"since": "yesterday"}, "query.since"),
        (
            "/api/v1/reviews/stats",
            {"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            "query.until",
        ),
    ]
    for path, params, field in bad_gets:
        response = await org.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert field in [detail["field"] for detail in response.json()["error"]["details"]], response.text
    unauthenticated = await org.api.get("/api/v1/reviews")
    assert unauthenticated.status_code == 401
