"""The analytics API answers from counters kept as verdicts change; they
must equal what the stored evaluations say."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import analytics
from models.tables import EvaluationIssue, EvaluationResult, IssueRollup, Trace, VerdictRollup
from tests.helpers import OrgClient

pytestmark = pytest.mark.usefixtures("worker")

SSN_ANSWER = "The patient's SSN is 219-09-9999."
# No crisis line for someone at risk: a critical issue in the healthcare pack.
UNSAFE_REPLY = {"input": "I want to kill myself.", "output": "Try to get some sleep.", "domain": "healthcare"}


async def rollups(session: AsyncSession, organization_id: uuid.UUID) -> tuple[set[Any], set[Any]]:
    """The organisation's non-zero rollup rows."""
    verdicts = await session.execute(
        select(VerdictRollup.__table__).where(
            VerdictRollup.organization_id == organization_id, VerdictRollup.evaluations != 0
        )
    )
    issues = await session.execute(
        select(IssueRollup.__table__).where(
            IssueRollup.organization_id == organization_id, IssueRollup.issues != 0
        )
    )
    return {tuple(row) for row in verdicts}, {tuple(row) for row in issues}


async def assert_rollups_match_evaluations(
    session_factory: async_sessionmaker[AsyncSession], organization_id: str
) -> None:
    """What the activities kept equals a recount from the stored evaluations."""
    org = uuid.UUID(organization_id)
    async with session_factory() as session, session.begin():
        kept = await rollups(session, org)
        await analytics.rebuild(session, org)
        recounted = await rollups(session, org)
        await session.rollback()
    assert kept == recounted
    assert kept[0], "nothing counted"


async def current_verdicts(
    session_factory: async_sessionmaker[AsyncSession], organization_id: str
) -> list[Any]:
    async with session_factory() as session:
        rows = await session.execute(
            select(Trace.model, EvaluationResult.passed, EvaluationResult.decided_by)
            .join(Trace, Trace.id == EvaluationResult.trace_id)
            .where(EvaluationResult.organization_id == uuid.UUID(organization_id), EvaluationResult.current)
        )
        return list(rows)


async def wait_for_version(org: OrgClient, trace_id: str, version: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        evaluation = await org.wait_for_evaluation(trace_id)
        if evaluation["version"] == version:
            return evaluation
        assert time.monotonic() < deadline, evaluation
        await asyncio.sleep(0.1)


def today() -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {
        "since": (now - dt.timedelta(hours=2)).isoformat(),
        "until": (now + dt.timedelta(hours=1)).isoformat(),
    }


async def test_analytics_follow_evaluations_overrides_and_reevaluations(
    org: OrgClient, other_org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    clean = await org.submit(model="model-a", output="4")
    unsafe = await org.submit(model="model-b", **UNSAFE_REPLY)
    overridden = await org.submit(model="model-b", output=SSN_ANSWER)
    elsewhere = await other_org.submit(model="model-a", output=SSN_ANSWER)
    for trace_id in (clean, unsafe, overridden):
        await org.wait_for_evaluation(trace_id)
    await other_org.wait_for_evaluation(elsewhere)

    before = (await org.get("/api/v1/analytics/summary", params=today())).json()
    assert (before["traces"], before["passed"], before["failed"]) == (3, 1, 2)
    assert before["issues"]["by_severity"]["critical"] >= 1 and before["issues"]["by_severity"]["high"] >= 1
    await assert_rollups_match_evaluations(session_factory, org.organization_id)

    # An expert passes one failed trace: it moves from failed to passed, decided by the expert.
    label = await org.post(
        f"/api/v1/traces/{overridden}/labels", json={"verdict": "pass", "reviewer": "dr.a"}
    )
    assert label.status_code == 200, label.text
    after = (await org.get("/api/v1/analytics/summary", params=today())).json()
    assert (after["traces"], after["passed"], after["pass_rate"]) == (3, 2, round(2 / 3, 4))
    settled = {share["tier"]: share["traces"] for share in after["settled_by"]}
    assert settled["expert"] == 1 and sum(settled.values()) == 3
    assert after["issues"] == before["issues"]  # an override leaves the issues found as they were
    await assert_rollups_match_evaluations(session_factory, org.organization_id)

    # Evaluated again, the trace counts once, under its new (automated) verdict.
    response = await org.post(f"/api/v1/traces/{overridden}/reevaluate")
    assert response.status_code == 202, response.text
    await wait_for_version(org, overridden, 2)
    again = (await org.get("/api/v1/analytics/summary", params=today())).json()
    assert (again["traces"], again["passed"]) == (3, 1)
    assert again["issues"] == before["issues"]
    assert set(again["issues"]["by_domain"]) == {"generic", "healthcare"}
    assert sum(again["issues"]["by_domain"].values()) == again["issues"]["total"]
    await assert_rollups_match_evaluations(session_factory, org.organization_id)

    stored = await current_verdicts(session_factory, org.organization_id)
    assert Counter(d for _, _, d in stored) == Counter(
        {s["tier"]: s["traces"] for s in again["settled_by"] if s["traces"]}
    )
    models = (await org.get("/api/v1/analytics/models", params=today())).json()["models"]
    assert [(m["model"], m["traces"], m["passed"]) for m in models] == [("model-b", 2, 0), ("model-a", 1, 1)]
    assert models[0]["critical_issues"] >= 1 and models[1]["critical_issues"] == 0

    async with session_factory() as session:
        issues = Counter(
            await session.scalars(
                select(EvaluationIssue.rule_id)
                .join(
                    EvaluationResult,
                    (EvaluationResult.trace_id == EvaluationIssue.trace_id)
                    & (EvaluationResult.version == EvaluationIssue.version),
                )
                .where(
                    EvaluationResult.organization_id == uuid.UUID(org.organization_id),
                    EvaluationResult.current,
                )
            )
        )
    breakdown = (await org.get("/api/v1/analytics/issues", params=today())).json()
    by_rule: Counter[str] = Counter()
    for row in breakdown["rows"]:
        by_rule[row["rule_id"]] += row["issues"]
    assert by_rule == issues and "pii.ssn" in by_rule
    assert breakdown["total"] == sum(issues.values())

    hourly = (
        await org.get(
            "/api/v1/analytics/timeseries", params={**today(), "metric": "traces", "interval": "hour"}
        )
    ).json()
    assert len(hourly["points"]) in (3, 4)  # every hour of the range, empty ones with 0
    assert sum(p["value"] for p in hourly["points"]) == 3
    rate = (
        await org.get(
            "/api/v1/analytics/timeseries", params={**today(), "metric": "pass_rate", "interval": "day"}
        )
    ).json()
    rates = [p["value"] for p in rate["points"]]
    assert round(1 / 3, 4) in rates and set(rates) <= {None, round(1 / 3, 4)}
    weekly = (
        await org.get("/api/v1/analytics/timeseries", params={"metric": "failed", "interval": "week"})
    ).json()
    assert all(dt.datetime.fromisoformat(p["start"]).weekday() == 0 for p in weekly["points"])
    assert sum(p["value"] for p in weekly["points"]) == 2

    # Filters, and another organisation's traces never count.
    only_a = (await org.get("/api/v1/analytics/summary", params={**today(), "model": "model-a"})).json()
    assert (only_a["traces"], only_a["passed"], only_a["cost_usd"]) == (1, 1, None)
    healthcare = (await org.get("/api/v1/analytics/summary", params={"domain": "healthcare"})).json()
    assert (healthcare["traces"], healthcare["pass_rate"]) == (1, 0.0)
    legal = (await org.get("/api/v1/analytics/summary", params={"domain": "legal"})).json()
    assert legal["traces"] == 0 and legal["pass_rate"] is None
    theirs = (await other_org.get("/api/v1/analytics/summary")).json()
    assert (theirs["traces"], theirs["passed"]) == (1, 0)


async def test_analytics_reject_bad_parameters_naming_them(org: OrgClient) -> None:
    for path, params, field in (
        ("summary", {"since": "2026-01-01T00:00:00"}, "query.since"),
        ("summary", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "query.since"),
        ("models", {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "query.since"),
        ("timeseries", {"metric": "vibes"}, "query.metric"),
        ("timeseries", {"interval": "month"}, "query.interval"),
        ("timeseries", {"metric": "cost_usd", "model": "gpt-4"}, "query.model"),
        ("issues", {"until": "soon"}, "query.until"),
    ):
        response = await org.get(f"/api/v1/analytics/{path}", params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert field in [d["field"] for d in response.json()["error"]["details"]], (path, params)
