"""Server time of the web console's pages with 10,000 traces in the organisation.

Run from the repository root::

    python -m bench.console [--traces 10000] [--repeat 20]

Starts an embedded PostgreSQL migrated to head, creates an organisation
through the API (the app in this process), stores ``--traces`` evaluated
traces with issues as ``bench.analytics`` does (and builds their rollups),
of which one in fifty waits for review and raised an alert,
signs in to the console with the organisation's key, and times each page
through the app, ``--repeat`` times after three warm-up calls. Prints one
JSON object: p50 and p95 per page in ms, and each p50 as a multiple of the
cheapest request the console serves (the sign-in form, the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.analytics import generate, rebuild
from bench.stack import in_process_api, migrated_postgres
from bench.tiers01 import percentile
from models.tables import Trace

TARGET_MS = 300
# Of the generated (failed) traces, every 50th waits for review and raised an alert.
REVIEWS_AND_ALERTS = """
WITH chosen AS (
    SELECT r.trace_id, r.domain, r.severity FROM evaluation_results AS r
    WHERE r.organization_id = CAST(:organization_id AS uuid) AND NOT r.passed
    ORDER BY r.trace_id LIMIT :count
), reviews AS (
    INSERT INTO review_requests
        (id, organization_id, trace_id, version, domain, reason, severity, risk_level, status, deadline)
    SELECT gen_random_uuid(), CAST(:organization_id AS uuid), trace_id, 1, domain, 'judge_rating', severity,
           'high', 'pending', now() + interval '2 days'
    FROM chosen
)
INSERT INTO alerts (id, organization_id, trace_id, severity, kind, message, details, delivery_status)
SELECT gen_random_uuid(), CAST(:organization_id AS uuid), trace_id, severity, 'evaluation',
       'Trace evaluated ' || severity, '{}'::jsonb, 'none'
FROM chosen
"""


async def sign_in(api: httpx.AsyncClient, api_key: str) -> dict[str, str]:
    """The console's cookies after signing in (sent by hand: they are Secure, the transport is http)."""
    form = await api.get("/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    csrf_cookie = re.search(r"aegis_console_csrf=([^;]+)", form.headers["set-cookie"]).group(1)  # type: ignore[union-attr]
    signed = await api.post(
        "/console/login",
        data={"api_key": api_key, "csrf_token": token, "next": ""},
        headers={"Cookie": f"aegis_console_csrf={csrf_cookie}"},
    )
    session = re.search(r"aegis_console=([^;]+)", signed.headers["set-cookie"]).group(1)  # type: ignore[union-attr]
    return {"Cookie": f"aegis_console={session}"}


async def timed(api: httpx.AsyncClient, path: str, headers: dict[str, str], repeat: int) -> dict[str, float]:
    latencies = []
    for attempt in range(repeat + 3):
        begun = time.perf_counter()
        response = await api.get(path, headers=headers)
        elapsed = (time.perf_counter() - begun) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")
        if attempt >= 3:
            latencies.append(elapsed)
    latencies.sort()
    return {"p50_ms": round(percentile(latencies, 0.5), 2), "p95_ms": round(percentile(latencies, 0.95), 2)}


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_async_engine(url)
    try:
        async with in_process_api(url) as (api, organization_id):
            api_key = api.headers["Authorization"].removeprefix("Bearer ")
            await generate(engine, organization_id, args.traces)
            await rebuild(engine, organization_id)
            async with engine.begin() as connection:
                await connection.execute(
                    text(REVIEWS_AND_ALERTS), {"organization_id": organization_id, "count": args.traces // 50}
                )
            async with engine.connect() as connection:
                # Generated traces have no Tier 0 outcome: give one a real text to show.
                trace_id = await connection.scalar(
                    select(Trace.id).order_by(Trace.created_at.desc()).limit(1)
                )
                await connection.execute(
                    text("UPDATE traces SET output = :output WHERE id = :id"),
                    {"output": "Your SSN 219-09-9999 is on file. " * 20, "id": trace_id},
                )
                await connection.commit()
            headers = await sign_in(api, api_key)
            pages = {
                "sign_in_form (baseline)": "/console/login",
                "overview_two_weeks": "/console/overview",
                "traces_newest": "/console/traces",
                "traces_failed_critical": "/console/traces?verdict=fail&severity=critical",
                "traces_search": "/console/traces?q=question",
                "trace_detail": f"/console/traces/{trace_id}",
                "review_queue": "/console/reviews",
                "alerts": "/console/alerts",
                "domains": "/console/domains",
                "domain_detail": "/console/domains/healthcare",
            }
            results = {name: await timed(api, path, headers, args.repeat) for name, path in pages.items()}
    finally:
        await engine.dispose()
    baseline = results["sign_in_form (baseline)"]["p50_ms"]
    for result in results.values():
        result["over_baseline"] = round(result["p50_ms"] / baseline, 1)
    slowest = max(result["p95_ms"] for result in results.values())
    return {"traces": args.traces, "target_ms": TARGET_MS, "slowest_p95_ms": slowest, "pages": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with migrated_postgres() as url:
        print(json.dumps(asyncio.run(measure(url, args))))


if __name__ == "__main__":
    main()
