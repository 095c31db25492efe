"""Full-text search at scale: ``GET /api/v1/traces?q=`` over a million traces.

Run from the repository root::

    python -m bench.search [--traces 1000000] [--repeat 30]

Starts an embedded PostgreSQL (migrated to head, so with the search index),
creates an organisation through the API (the app in this process), and
stores ``--traces`` generated traces of 30 words each with SQL, in batches
of 100,000, through the same index every trace goes through. Some words
occur in every 5th trace (``common``), every 100th (``medium``) and every
100,000th (``rare``). Then it times, through the API, the newest page of
traces (the baseline: what the trace list costs without a search), and
searches for a rare, a medium and a common word, a phrase, and a word with
a domain filter, ``--repeat`` times each. Prints one JSON object: p50 and
p95 per query in ms, and each p50 as a multiple of the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.stack import in_process_api, migrated_postgres
from bench.tiers01 import percentile

BATCH = 100_000
# 1,000 filler words; the searched ones are added at known rates.
GENERATE = """
INSERT INTO traces
    (id, organization_id, model, input, output, domain, status, metadata, created_at, updated_at)
SELECT gen_random_uuid(), CAST(:organization_id AS uuid), 'bench-model',
       'question ' || g,
       array_to_string(ARRAY(
           SELECT 'term' || (abs(hashint8(g::bigint * 31 + k)) % 1000) FROM generate_series(1, 30) AS k
       ), ' ')
       || CASE WHEN g % 5 = 0 THEN ' common' ELSE '' END
       || CASE WHEN g % 100 = 0 THEN ' medium phrase words' ELSE '' END
       || CASE WHEN g % 100000 = 0 THEN ' rare' ELSE '' END,
       CASE WHEN g % 2 = 0 THEN 'healthcare' ELSE 'generic' END,
       'completed', '{}'::jsonb,
       now() - make_interval(secs => CAST(:total AS integer) - g), now()
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g
"""
QUERIES = {
    "rare_word": {"q": "rare"},
    "medium_word": {"q": "medium"},
    "common_word": {"q": "common"},
    "phrase": {"q": '"phrase words"'},
    "word_and_domain": {"q": "medium", "domain": "healthcare"},
}


async def generate(url: str, organization_id: str, total: int) -> float:
    engine = create_async_engine(url)
    started = time.perf_counter()
    try:
        for first in range(1, total + 1, BATCH):
            async with engine.begin() as connection:
                await connection.execute(
                    text(GENERATE),
                    {
                        "organization_id": organization_id,
                        "first": first,
                        "last": min(first + BATCH - 1, total),
                        "total": total,
                    },
                )
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE traces"))
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def timed(api: httpx.AsyncClient, params: dict[str, Any], repeat: int) -> dict[str, Any]:
    latencies = []
    found = 0
    for attempt in range(repeat + 3):
        begun = time.perf_counter()
        response = await api.get("/api/v1/traces", params={"limit": 50, **params})
        elapsed = (time.perf_counter() - begun) * 1000
        response.raise_for_status()
        found = len(response.json()["items"])
        if attempt >= 3:  # the first calls warm the caches
            latencies.append(elapsed)
    latencies.sort()
    return {
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "items": found,
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    async with in_process_api(url) as (api, organization_id):
        generate_seconds = await generate(url, organization_id, args.traces)
        baseline = await timed(api, {}, args.repeat)
        results = {name: await timed(api, params, args.repeat) for name, params in QUERIES.items()}
    for result in results.values():
        result["over_baseline"] = round(result["p50_ms"] / baseline["p50_ms"], 2)
    return {
        "traces": args.traces,
        "generate_seconds": round(generate_seconds, 1),
        "baseline_newest_page": baseline,
        "search": results,
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
