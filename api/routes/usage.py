"""Usage and spend: evaluations decided and paid calls made, by day, domain and tier."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import cast, func, select
from sqlalchemy.types import Date

from api import timerange
from api.deps import CurrentCaller, Session
from api.errors import AUTHENTICATED_ERRORS
from models.tables import UsageMetric

router = APIRouter(tags=["usage"], responses=AUTHENTICATED_ERRORS)


class UsageRow(BaseModel):
    day: dt.date
    domain: str
    tier: str
    evaluations: int = Field(description="Traces whose verdict this tier decided.")
    calls: int = Field(description="Paid provider calls made by this tier (the judge).")
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UsageTotals(BaseModel):
    evaluations: int
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UsageReport(BaseModel):
    since: dt.datetime
    until: dt.datetime
    rows: list[UsageRow]
    totals: UsageTotals


@router.get("/usage", response_model=UsageReport)
async def get_usage(
    caller: CurrentCaller,
    session: Session,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    domain: str | None = None,
) -> UsageReport:
    """Hourly counters summed per UTC day, domain and tier (default: the last 30 days)."""
    since, until = timerange.resolve(since, until)
    day = cast(func.timezone("UTC", UsageMetric.hour), Date).label("day")
    query = (
        select(
            day,
            UsageMetric.domain,
            UsageMetric.tier,
            func.sum(UsageMetric.evaluations),
            func.sum(UsageMetric.calls),
            func.sum(UsageMetric.input_tokens),
            func.sum(UsageMetric.output_tokens),
            func.sum(UsageMetric.cost_usd),
        )
        .where(
            UsageMetric.organization_id == caller.organization_id,
            UsageMetric.hour >= since.replace(minute=0, second=0, microsecond=0),
            UsageMetric.hour < until,
        )
        .group_by(day, UsageMetric.domain, UsageMetric.tier)
        .order_by(day, UsageMetric.domain, UsageMetric.tier)
    )
    if domain:
        query = query.where(UsageMetric.domain == domain)
    rows = [
        UsageRow(
            day=row[0],
            domain=row[1],
            tier=row[2],
            evaluations=row[3],
            calls=row[4],
            input_tokens=row[5],
            output_tokens=row[6],
            cost_usd=float(row[7]),
        )
        for row in await session.execute(query)
    ]
    totals = UsageTotals(
        evaluations=sum(r.evaluations for r in rows),
        calls=sum(r.calls for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_usd=round(sum(r.cost_usd for r in rows), 6),
    )
    return UsageReport(since=since, until=until, rows=rows, totals=totals)
