"""The analytics API at scale: every endpoint over a million evaluated traces.

Run from the repository root::

    python -m bench.analytics [--traces 1000000] [--repeat 30]

Starts an embedded PostgreSQL migrated to head, creates an organisation
through the API (the app in this process), and stores ``--traces``
generated traces spread over the last 30 days, each with a current
evaluation (five domains, five models, one in ten failed with one or two
issues, decided by every tier), in batches of 100,000. It then builds the
rollups from them (``core.analytics.rebuild``, the recount the tests
compare the kept counters with) and times, through the API, the summary,
an hourly and a daily timeseries, the issue breakdown and the model report
over those 30 days, ``--repeat`` times each. The baseline is the summary's
verdict counts computed straight from the stored evaluations, as an API
without rollups would. Prints one JSON object: p50 and p95 per endpoint in
ms, the baseline's, and each endpoint's p50 as a share of the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.stack import in_process_api, migrated_postgres
from bench.tiers01 import percentile
from core import analytics

BATCH = 100_000
SPAN_SECONDS = 30 * 24 * 3600 - 3600  # the last 30 days, less an hour so the default range holds them all
# Trace g's id, the same in each of the three statements.
TRACE_ID = "CAST(md5(CAST(:organization_id AS text) || g) AS uuid)"
GENERATE_TRACES = f"""
INSERT INTO traces
    (id, organization_id, model, input, output, domain, status, metadata, created_at, updated_at)
SELECT {TRACE_ID}, CAST(:organization_id AS uuid),
       'model-' || ((g / 7) % 5), 'question ' || g, 'answer ' || g,
       (ARRAY['generic', 'healthcare', 'legal', 'trading', 'robotics'])[1 + g % 5],
       'completed', '{{}}'::jsonb,
       now() - make_interval(secs => (g::bigint * 7919) % :span), now()
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g
"""
GENERATE_RESULTS = f"""
INSERT INTO evaluation_results (id, organization_id, trace_id, version, current, domain,
                                passed, severity, decided_by, tiers, workflow_id)
SELECT gen_random_uuid(), CAST(:organization_id AS uuid), {TRACE_ID},
       1, true, (ARRAY['generic', 'healthcare', 'legal', 'trading', 'robotics'])[1 + g % 5],
       g % 10 <> 0,
       CASE WHEN g % 10 <> 0 THEN 'none' WHEN g % 30 = 0 THEN 'critical' ELSE 'high' END,
       (ARRAY['rules', 'rules', 'rules', 'rules', 'rules', 'rules', 'rules', 'classifier', 'judge', 'expert'])
           [1 + (g / 10) % 10],
       '[]'::jsonb, 'evaluate-' || g
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g
"""
GENERATE_ISSUES = f"""
INSERT INTO evaluation_issues
    (id, organization_id, trace_id, version, tier, ordinal, rule_id, category, severity, message, spans)
SELECT gen_random_uuid(), CAST(:organization_id AS uuid), {TRACE_ID},
       1, 1, k, 'rule.' || ((g / 10 + k) % 40), (ARRAY['pii', 'dosing', 'triage', 'advice'])[1 + (g + k) % 4],
       CASE WHEN g % 30 = 0 THEN 'critical' ELSE 'high' END, 'generated', '[]'::jsonb
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g,
     generate_series(0, 1) AS k
WHERE g % 10 = 0 AND (k = 0 OR g % 20 = 0)
"""
# What a summary without rollups would run: the verdict counts straight from the evaluations.
BASELINE = """
SELECT r.decided_by, r.severity, r.passed, count(*)
FROM evaluation_results AS r JOIN traces AS t ON t.id = r.trace_id
WHERE r.organization_id = CAST(:organization_id AS uuid) AND r.current
  AND t.created_at >= now() - interval '30 days'
GROUP BY 1, 2, 3
"""
ENDPOINTS = {
    "summary": ("/api/v1/analytics/summary", {}),
    "timeseries_hourly_pass_rate": (
        "/api/v1/analytics/timeseries",
        {"metric": "pass_rate", "interval": "hour"},
    ),
    "timeseries_daily_traces": ("/api/v1/analytics/timeseries", {"metric": "traces", "interval": "day"}),
    "issues": ("/api/v1/analytics/issues", {}),
    "models": ("/api/v1/analytics/models", {}),
    "summary_one_domain": ("/api/v1/analytics/summary", {"domain": "healthcare"}),
}


async def generate(engine: AsyncEngine, organization_id: str, total: int) -> float:
    started = time.perf_counter()
    for first in range(1, total + 1, BATCH):
        bounds = {
            "organization_id": organization_id,
            "first": first,
            "last": min(first + BATCH - 1, total),
            "span": SPAN_SECONDS,
        }
        async with engine.begin() as connection:
            for statement in (GENERATE_TRACES, GENERATE_RESULTS, GENERATE_ISSUES):
                await connection.execute(text(statement), bounds)
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE traces, evaluation_results, evaluation_issues"))
    return time.perf_counter() - started


async def rebuild(engine: AsyncEngine, organization_id: str) -> tuple[float, dict[str, int]]:
    """Seconds to build the rollups, and the rows they came to."""
    started = time.perf_counter()
    async with engine.begin() as connection:
        await analytics.rebuild(connection, uuid.UUID(organization_id))
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE verdict_rollups, issue_rollups"))
        seconds = time.perf_counter() - started
        rows = {
            table: await connection.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("verdict_rollups", "issue_rollups")
        }
    return seconds, rows


def summarise(latencies: list[float]) -> dict[str, float]:
    latencies.sort()
    return {"p50_ms": round(percentile(latencies, 0.5), 2), "p95_ms": round(percentile(latencies, 0.95), 2)}


async def timed_endpoint(
    api: httpx.AsyncClient, path: str, params: dict[str, Any], repeat: int
) -> dict[str, Any]:
    latencies = []
    for attempt in range(repeat + 3):
        begun = time.perf_counter()
        response = await api.get(path, params=params)
        elapsed = (time.perf_counter() - begun) * 1000
        response.raise_for_status()
        if attempt >= 3:  # the first calls warm the caches
            latencies.append(elapsed)
    return summarise(latencies)


async def timed_baseline(
    engine: AsyncEngine, organization_id: str, repeat: int
) -> tuple[dict[str, Any], int]:
    latencies = []
    traces = 0
    async with engine.connect() as connection:
        for attempt in range(min(repeat, 10) + 1):  # slow: fewer rounds
            begun = time.perf_counter()
            rows = (await connection.execute(text(BASELINE), {"organization_id": organization_id})).all()
            elapsed = (time.perf_counter() - begun) * 1000
            traces = sum(row[3] for row in rows)
            if attempt >= 1:
                latencies.append(elapsed)
    return summarise(latencies), traces


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_async_engine(url)
    try:
        async with in_process_api(url) as (api, organization_id):
            generate_seconds = await generate(engine, organization_id, args.traces)
            rebuild_seconds, rollup_rows = await rebuild(engine, organization_id)
            summary = (await api.get("/api/v1/analytics/summary")).json()
            baseline, baseline_traces = await timed_baseline(engine, organization_id, args.repeat)
            endpoints = {
                name: await timed_endpoint(api, path, params, args.repeat)
                for name, (path, params) in ENDPOINTS.items()
            }
    finally:
        await engine.dispose()
    for result in endpoints.values():
        result["of_baseline"] = round(result["p50_ms"] / baseline["p50_ms"], 4)
    return {
        "traces": args.traces,
        "generate_seconds": round(generate_seconds, 1),
        "rollup_rebuild_seconds": round(rebuild_seconds, 1),
        "rollup_rows": rollup_rows,
        # Both count every generated trace, or the timings compare different work.
        "summary_traces": summary["traces"],
        "baseline_traces": baseline_traces,
        "baseline_summary_from_evaluations": baseline,
        "endpoints": endpoints,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with migrated_postgres() as url:
        print(json.dumps(asyncio.run(measure(url, args))))


if __name__ == "__main__":
    main()
