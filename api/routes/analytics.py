"""How are we doing: verdicts, issues, tiers and spend over time.

Every answer is summed from the hourly rollups (core.analytics) and, for
spend, the hourly usage counters, so its cost follows the number of hours
in the range, not the number of traces. A trace counts in the hour it was
created, under its current verdict (an expert's override included). Ranges
are whole hours: ``since`` is rounded down to its hour and ``until`` up, and
the answer says which range it covers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, func, literal_column, select

from api import timerange
from api.deps import CurrentCaller, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError
from core.analytics import hour_of
from evaluators.escalation import TIER_NAMES
from evaluators.types import Severity
from models.tables import IssueRollup, UsageMetric, VerdictRollup

router = APIRouter(prefix="/analytics", tags=["analytics"], responses=AUTHENTICATED_ERRORS)

Since = Annotated[dt.datetime | None, Query(description="Start (default: 30 days before until).")]
Until = Annotated[dt.datetime | None, Query(description="End, exclusive (default: now).")]
NO_NUL = r"^[^\x00]*$"


@dataclass(frozen=True)
class Scope:
    """What every report is about: the caller's organisation, a range, optionally one domain and model."""

    organization_id: uuid.UUID
    since: dt.datetime
    until: dt.datetime
    domain: str | None
    model: str | None

    def within(self, query: Select[Any], table: Any, *, by_model: bool = True) -> Select[Any]:
        """``query`` over ``table``'s hourly rows in scope (``by_model``: the table has a model)."""
        query = query.where(
            table.c.organization_id == self.organization_id,
            table.c.hour >= self.since,
            table.c.hour < self.until,
        )
        if self.domain:
            query = query.where(table.c.domain == self.domain)
        if self.model and by_model:
            query = query.where(table.c.model == self.model)
        return query


# async, though it waits for nothing: FastAPI runs a plain ``def``
# dependency in its thread pool.
async def in_scope(
    caller: CurrentCaller,
    since: Since = None,
    until: Until = None,
    domain: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    model: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
) -> Scope:
    since, until = timerange.resolve(since, until)
    # Whole hours, as the counters are kept: since rounded down, until up.
    rounded_until = hour_of(until)
    if rounded_until < until:
        rounded_until += dt.timedelta(hours=1)
    return Scope(caller.organization_id, hour_of(since), rounded_until, domain, model)


InScope = Annotated[Scope, Depends(in_scope)]


class Interval(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"


class Metric(StrEnum):
    TRACES = "traces"
    PASSED = "passed"
    FAILED = "failed"
    PASS_RATE = "pass_rate"
    ISSUES = "issues"
    CRITICAL_ISSUES = "critical_issues"
    COST_USD = "cost_usd"


class TierShare(BaseModel):
    tier: str
    traces: int
    share: float = Field(description="Of the traces in the range, the share this tier's verdict decided.")


class IssueCounts(BaseModel):
    total: int
    by_severity: dict[str, int]
    by_category: dict[str, int]
    by_domain: dict[str, int]


class Summary(BaseModel):
    since: dt.datetime
    until: dt.datetime
    traces: int = Field(description="Traces created in the range with a finished evaluation.")
    passed: int
    failed: int
    pass_rate: float | None = Field(description="passed / traces; null without traces.")
    verdicts_by_severity: dict[str, int]
    settled_by: list[TierShare]
    issues: IssueCounts
    judge_calls: int | None = Field(
        description="Paid judge calls made in the range; null with a model filter."
    )
    cost_usd: float | None = Field(
        description="Their cost; null with a model filter (spend is kept per domain)."
    )


class Point(BaseModel):
    start: dt.datetime
    value: float | None


class Timeseries(BaseModel):
    metric: Metric
    interval: Interval
    points: list[Point]


class IssueRow(BaseModel):
    category: str
    severity: Severity
    tier: str
    rule_id: str
    issues: int


class IssueBreakdown(BaseModel):
    since: dt.datetime
    until: dt.datetime
    total: int
    rows: list[IssueRow] = Field(description="Most frequent first.")


class ModelRow(BaseModel):
    model: str
    traces: int
    passed: int
    pass_rate: float | None
    critical_issues: int


class ModelReport(BaseModel):
    since: dt.datetime
    until: dt.datetime
    models: list[ModelRow] = Field(description="Most traces first.")


VERDICTS = VerdictRollup.__table__
ISSUES = IssueRollup.__table__
USAGE = UsageMetric.__table__


def _most_first(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _rate(passed: int, traces: int) -> float | None:
    return round(passed / traces, 4) if traces else None


@router.get("/summary", response_model=Summary)
async def summary(scope: InScope, session: Session) -> Summary:
    """Traces, pass rate, verdicts by severity, the share each tier settled,
    issues by severity and category, and judge spend."""
    verdicts = await session.execute(
        scope.within(
            select(
                VERDICTS.c.decided_by,
                VERDICTS.c.severity,
                VERDICTS.c.passed,
                func.sum(VERDICTS.c.evaluations),
            ).group_by(VERDICTS.c.decided_by, VERDICTS.c.severity, VERDICTS.c.passed),
            VERDICTS,
        )
    )
    traces = passed = 0
    by_severity = dict.fromkeys((s.value for s in Severity), 0)
    by_tier = dict.fromkeys(TIER_NAMES, 0)
    for decided_by, severity, was_passed, number in verdicts:
        traces += number
        passed += number if was_passed else 0
        by_severity[severity] = by_severity.get(severity, 0) + number
        by_tier[decided_by] = by_tier.get(decided_by, 0) + number
    issues = await session.execute(
        scope.within(
            select(ISSUES.c.severity, ISSUES.c.category, ISSUES.c.domain, func.sum(ISSUES.c.issues)).group_by(
                ISSUES.c.severity, ISSUES.c.category, ISSUES.c.domain
            ),
            ISSUES,
        )
    )
    issues_by_severity = dict.fromkeys((s.value for s in Severity if s is not Severity.NONE), 0)
    issues_by_category: dict[str, int] = defaultdict(int)
    issues_by_domain: dict[str, int] = defaultdict(int)
    for severity, category, domain, number in issues:
        issues_by_severity[severity] = issues_by_severity.get(severity, 0) + number
        issues_by_category[category] += number
        issues_by_domain[domain] += number
    calls = cost = None
    if not scope.model:
        spend = (
            await session.execute(
                scope.within(
                    select(
                        func.coalesce(func.sum(USAGE.c.calls), 0),
                        func.coalesce(func.sum(USAGE.c.cost_usd), 0),
                    ),
                    USAGE,
                    by_model=False,
                )
            )
        ).one()
        calls, cost = int(spend[0]), round(float(spend[1]), 6)
    return Summary(
        since=scope.since,
        until=scope.until,
        traces=traces,
        passed=passed,
        failed=traces - passed,
        pass_rate=_rate(passed, traces),
        verdicts_by_severity=by_severity,
        settled_by=[
            TierShare(tier=tier, traces=number, share=round(number / traces, 4) if traces else 0.0)
            for tier, number in by_tier.items()
        ],
        issues=IssueCounts(
            total=sum(issues_by_severity.values()),
            by_severity=issues_by_severity,
            by_category=_most_first(issues_by_category),
            by_domain=_most_first(issues_by_domain),
        ),
        judge_calls=calls,
        cost_usd=cost,
    )


def _bucket_starts(since: dt.datetime, until: dt.datetime, interval: Interval) -> list[dt.datetime]:
    """Every bucket that overlaps [since, until), in UTC."""
    start = since
    if interval is not Interval.HOUR:
        start = start.replace(hour=0)
    if interval is Interval.WEEK:
        start -= dt.timedelta(days=start.weekday())  # weeks start on Monday, as in PostgreSQL
    step = {Interval.HOUR: dt.timedelta(hours=1), Interval.DAY: dt.timedelta(days=1)}.get(
        interval, dt.timedelta(weeks=1)
    )
    starts = []
    while start < until:
        starts.append(start)
        start += step
    return starts


def _bucket(table: Any, interval: Interval) -> Any:
    return func.timezone("UTC", func.date_trunc(interval.value, func.timezone("UTC", table.c.hour)))


@router.get("/timeseries", response_model=Timeseries)
async def timeseries(
    scope: InScope,
    session: Session,
    metric: Annotated[Metric, Query()] = Metric.TRACES,
    interval: Annotated[Interval, Query()] = Interval.DAY,
) -> Timeseries:
    """One metric per hour, day or week (UTC); every bucket of the range is
    listed, empty ones with 0 (or null for a rate)."""
    if metric is Metric.COST_USD:
        if scope.model:
            raise ApiError(
                422,
                "unsupported_filter",
                "Spend is kept per domain, not per model: leave out model",
                [{"field": "query.model", "message": "not available for cost_usd"}],
            )
        bucket = _bucket(USAGE, interval)
        query = scope.within(
            select(bucket, func.sum(USAGE.c.cost_usd), literal_column("0")), USAGE, by_model=False
        )
    elif metric in (Metric.ISSUES, Metric.CRITICAL_ISSUES):
        bucket = _bucket(ISSUES, interval)
        query = scope.within(select(bucket, func.sum(ISSUES.c.issues), literal_column("0")), ISSUES)
        if metric is Metric.CRITICAL_ISSUES:
            query = query.where(ISSUES.c.severity == Severity.CRITICAL.value)
    else:
        bucket = _bucket(VERDICTS, interval)
        passed = func.sum(VERDICTS.c.evaluations).filter(VERDICTS.c.passed)
        query = scope.within(select(bucket, func.sum(VERDICTS.c.evaluations), passed), VERDICTS)
    rows = {start: (total, passed) for start, total, passed in await session.execute(query.group_by(bucket))}
    points = []
    for start in _bucket_starts(scope.since, scope.until, interval):
        total, passed = rows.get(start, (0, 0))
        total, passed = total or 0, passed or 0
        value: float | None
        match metric:
            case Metric.PASS_RATE:
                value = _rate(passed, total)
            case Metric.PASSED:
                value = passed
            case Metric.FAILED:
                value = total - passed
            case Metric.COST_USD:
                value = round(float(total), 6)
            case _:
                value = total
        points.append(Point(start=start, value=value))
    return Timeseries(metric=metric, interval=interval, points=points)


@router.get("/issues", response_model=IssueBreakdown)
async def issues(scope: InScope, session: Session) -> IssueBreakdown:
    """Issues of the current verdicts by category, severity, tier and rule."""
    number = func.sum(ISSUES.c.issues)
    keys = (ISSUES.c.category, ISSUES.c.severity, ISSUES.c.tier, ISSUES.c.rule_id)
    rows = [
        IssueRow(category=category, severity=severity, tier=TIER_NAMES[tier], rule_id=rule_id, issues=count)
        for category, severity, tier, rule_id, count in await session.execute(
            scope.within(select(*keys, number).group_by(*keys), ISSUES)
            .having(number > 0)
            .order_by(number.desc(), *keys)
        )
    ]
    return IssueBreakdown(since=scope.since, until=scope.until, total=sum(r.issues for r in rows), rows=rows)


@router.get("/models", response_model=ModelReport)
async def models(scope: InScope, session: Session) -> ModelReport:
    """Per model: traces, pass rate and critical issues (``model`` narrows it to one)."""
    verdicts = await session.execute(
        scope.within(
            select(
                VERDICTS.c.model,
                func.sum(VERDICTS.c.evaluations),
                func.coalesce(func.sum(VERDICTS.c.evaluations).filter(VERDICTS.c.passed), 0),
            ).group_by(VERDICTS.c.model),
            VERDICTS,
        )
    )
    critical_rows = await session.execute(
        scope.within(
            select(ISSUES.c.model, func.sum(ISSUES.c.issues))
            .where(ISSUES.c.severity == Severity.CRITICAL.value)
            .group_by(ISSUES.c.model),
            ISSUES,
        )
    )
    critical = {name: number for name, number in critical_rows}
    rows = [
        ModelRow(
            model=name,
            traces=traces,
            passed=passed,
            pass_rate=_rate(passed, traces),
            critical_issues=critical.get(name, 0),
        )
        for name, traces, passed in verdicts
        if traces > 0
    ]
    rows.sort(key=lambda row: (-row.traces, row.model))
    return ModelReport(since=scope.since, until=scope.until, models=rows)
