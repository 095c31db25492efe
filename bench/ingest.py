"""Ingestion: how fast ``POST /api/v1/traces`` (and the batch endpoint) accepts traces.

Run from the repository root::

    python -m bench.ingest [--requests 2000] [--levels 1,8,32,64] [--batch-traces 10000]

Starts the stack (``bench/stack.py``: embedded PostgreSQL, Temporal dev
server, ``aegis api`` as a real uvicorn process), then measures twice: with no
worker running (ingestion alone; the workflows just queue up in Temporal) and
with one worker evaluating what comes in. At each concurrency level the client
sends ``--requests`` single POSTs from that many connections; then
``--batch-traces`` traces in batches of ``--batch-size`` from two connections;
and ``/health`` at concurrency 1. Latency is measured at the client, on the
same machine: it includes the client's own share of the two cores. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.stack import Stack, create_organization, now, percentile, rss_mb

INPUT = "I have had a headache for three days and ibuprofen does not help. What else can I take? " * 4
OUTPUT = (
    "For most adults, acetaminophen 500 mg every 6 hours is an option; do not exceed the maximum daily "
    "dose on the label, and ask your pharmacist if you take other medicines. See a doctor if the "
    "headache is severe, sudden, or comes with fever, a stiff neck or confusion. "
) * 3


def trace_body(domain: str = "healthcare") -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "input": INPUT,
        "output": OUTPUT,
        "domain": domain,
        "external_id": uuid.uuid4().hex,
        "metadata": {"app": "bench"},
    }


def summary(latencies_ms: list[float], seconds: float, errors: int, items: int) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    return {
        "requests": len(ordered),
        "errors": errors,
        "items_per_second": round(items / seconds, 1),
        "p50_ms": round(percentile(ordered, 0.50), 2),
        "p95_ms": round(percentile(ordered, 0.95), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


async def drive(
    client: httpx.AsyncClient,
    concurrency: int,
    requests: int,
    send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    expected: int,
    items_per_request: int = 1,
) -> dict[str, Any]:
    """``requests`` calls of ``send`` from ``concurrency`` lanes; latency of each."""
    latencies: list[float] = []
    errors = 0

    async def lane(count: int) -> None:
        nonlocal errors
        for _ in range(count):
            start = now()
            response = await send(client)
            latencies.append((now() - start) * 1000)
            if response.status_code != expected:
                errors += 1

    shares = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    started = now()
    await asyncio.gather(*(lane(share) for share in shares))
    return summary(latencies, now() - started, errors, requests * items_per_request)


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    key = await create_organization(stack.api_url)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=max(args.levels), max_keepalive_connections=max(args.levels))
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def single(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post("/api/v1/traces", json=trace_body())

        async def batch(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(
                "/api/v1/traces/batch", json={"traces": [trace_body() for _ in range(args.batch_size)]}
            )

        async def health(client: httpx.AsyncClient) -> httpx.Response:
            return await client.get("/health")

        await drive(client, 8, 200, single, 202)  # warm-up: connections, caches, the JIT-less first calls
        results: dict[str, Any] = {"single_post": {}}
        for level in args.levels:
            results["single_post"][str(level)] = await drive(client, level, args.requests, single, 202)
        batches = max(1, args.batch_traces // args.batch_size)
        results["batch"] = await drive(client, 2, batches, batch, 202, items_per_request=args.batch_size)
        results["batch"]["batch_size"] = args.batch_size
        results["health"] = await drive(client, 1, args.requests, health, 200)
    results["api_rss_mb"] = rss_mb(stack.pid("api"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="single POSTs per concurrency level")
    parser.add_argument(
        "--levels", type=lambda text: [int(x) for x in text.split(",")], default=[1, 8, 32, 64]
    )
    parser.add_argument("--batch-traces", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument("--temporal-address", help="use this Temporal instead of a dev server")
    args = parser.parse_args()

    output: dict[str, Any] = {"python": sys.version.split()[0]}
    with Stack(workers=0, database_url=args.database_url, temporal_address=args.temporal_address) as stack:
        output["ingest_only"] = asyncio.run(measure(stack, args))
        stack.start_worker(0)
        output["with_worker"] = asyncio.run(measure(stack, args))
        output["worker_rss_mb"] = rss_mb(stack.pid("worker-0"))
    print(json.dumps(output))


if __name__ == "__main__":
    main()
