"""Ingestion: how fast ``POST /api/v1/traces`` (and the batch endpoint) accepts traces.

Run from the repository root::

    python -m bench.ingest [--requests 2000] [--levels 1,8,32,64] [--rate 150] [--batch-traces 10000]
                           [--sample-waits]

Starts the stack (``bench/stack.py``: embedded PostgreSQL, Temporal dev
server, ``aegis api`` as a real uvicorn process), then measures twice: with no
worker running (ingestion alone; the workflows just queue up in Temporal) and
with one worker evaluating what comes in. Each time:

- ``single_post``: at each concurrency level, that many clients send
  ``--requests`` POSTs back to back: the most the API accepts, and the
  latency at that saturation (by Little's law, clients / throughput);
- ``paced_32``: 32 clients sending ``--rate`` traces/s between them: the
  latency a client sees at that load, from when the API has dispatched the
  backlog of the saturating runs; with the CPU each process spent per
  trace meanwhile (``cpu_ms_per_trace``) and how long its threads were
  ready to run but waited for a core (``run_queue_wait_ms_per_trace``),
  and the share of requests slower than 50 ms by the client's clock and
  by the API's own (``over_50ms_pct``): a request slow for the client but
  not for the API waited before the app had it. With the embedded
  PostgreSQL, also the CPU and the run-queue wait of the server processes
  of the API's sessions (``api_sessions_ms_per_trace``), and with
  ``--sample-waits`` what those sessions waited for, sampled every 10 ms
  (``api_session_waits``; ``bench/waits.py``);
- ``batch``: ``--batch-traces`` traces in batches of ``--batch-size`` from two
  clients; ``health``: ``GET /health`` at concurrency 1, once the API has
  dispatched every accepted trace (``health_while_dispatching``: right
  after the batches, while it still does).

Latency is measured at the client, on the same machine: it includes the
client's own share of the two cores, which ``bench/loadgen.py`` keeps small
(0.4 ms of CPU per request against httpx's 1.5–1.8). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from bench.loadgen import LoadClient
from bench.stack import CpuMeter, Stack, create_organization, now, rss_mb
from bench.tiers01 import percentile
from bench.waits import ApiSessions, WaitSampler
from core.db import create_engine
from core.settings import Settings
from models.schemas import TraceStatus
from models.tables import Trace

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


# A request slower than this counts as slow; a bucket bound of the API's
# request histogram (core.metrics), so the API's count of them is exact.
SLOW_MS = 50
INGEST_ROUTE = "/api/v1/traces"


def slow_share(latencies_ms: list[float]) -> float:
    """The percentage of requests slower than SLOW_MS."""
    return round(100 * sum(latency > SLOW_MS for latency in latencies_ms) / len(latencies_ms), 2)


async def drive(
    concurrency: int,
    requests: int,
    send: Callable[[], Awaitable[int]],
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
            status = await send()
            latencies.append((now() - start) * 1000)
            if status != expected:
                errors += 1

    shares = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    started = now()
    await asyncio.gather(*(lane(share) for share in shares))
    return summary(latencies, now() - started, errors, requests * items_per_request)


async def drive_paced(
    concurrency: int,
    rate: float,
    requests: int,
    send: Callable[[], Awaitable[int]],
    expected: int,
) -> dict[str, Any]:
    """``concurrency`` clients sending ``rate`` requests/s between them, each on
    its own schedule (a late request goes at once: the load never drops)."""
    latencies: list[float] = []
    errors = 0
    interval = concurrency / rate

    async def lane(number: int, count: int, started: float) -> None:
        nonlocal errors
        for sent in range(count):
            due = started + (number / concurrency + sent) * interval
            if (wait := due - now()) > 0:
                await asyncio.sleep(wait)
            begin = now()
            status = await send()
            latencies.append((now() - begin) * 1000)
            if status != expected:
                errors += 1

    per_lane = max(1, requests // concurrency)
    started = now()
    await asyncio.gather(*(lane(n, per_lane, started) for n in range(concurrency)))
    result = summary(latencies, now() - started, errors, per_lane * concurrency)
    return {"offered_per_second": rate, **result, "over_50ms_pct": {"client": slow_share(latencies)}}


async def api_timed_posts(api_url: str) -> tuple[float, float]:
    """How many ``POST /api/v1/traces`` the API has answered, and how many
    of them took it longer than SLOW_MS by its own timer (its ``/metrics``).
    That timer starts when the app receives the request, so a request the
    client saw slow but the API did not waited before the app had it: in
    the API's event loop, the sockets, or the client itself."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        return timed_posts((await http.get("/metrics")).text)


def timed_posts(exposition: str) -> tuple[float, float]:
    """From a Prometheus exposition: ingestion requests answered, and slower than SLOW_MS."""
    answered = fast = 0.0
    bound_found = False
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if not (
                sample.name == "aegis_http_request_seconds_bucket"
                and labels.get("method") == "POST"
                and labels.get("route") == INGEST_ROUTE
            ):
                continue
            if labels["le"] == "+Inf":
                answered += sample.value
            elif float(labels["le"]) == SLOW_MS / 1000:
                fast += sample.value
                bound_found = True
    if answered and not bound_found:
        raise ValueError(f"the API's request histogram has no {SLOW_MS} ms bucket")
    return answered, answered - fast


async def dispatched(stack: Stack, timeout: float = 300.0) -> float:
    """Wait until the API has started a workflow for every accepted trace (the
    saturating runs leave a backlog its dispatcher works through after they
    answer); returns the seconds waited."""
    engine = create_engine(Settings(database_url=stack.database_url))
    started = now()
    try:
        async with engine.connect() as connection:
            while await connection.scalar(
                select(func.count()).where(Trace.status == TraceStatus.PENDING_DISPATCH.value)
            ):
                await connection.rollback()  # a fresh snapshot for the next poll
                if now() - started > timeout:
                    raise SystemExit("ingest: the dispatch backlog did not drain")
                await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    return round(now() - started, 1)


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    key = await create_organization(stack.api_url)
    client = LoadClient(stack.api_url, {"Authorization": f"Bearer {key}"}, connections=max(args.levels))

    async def single() -> int:
        return await client.request("POST", "/api/v1/traces", trace_body())

    async def batch() -> int:
        body = {"traces": [trace_body() for _ in range(args.batch_size)]}
        return await client.request("POST", "/api/v1/traces/batch", body)

    async def health() -> int:
        return await client.request("GET", "/health")

    try:
        await drive(8, 200, single, 202)  # warm-up: connections, caches, the JIT-less first calls
        results: dict[str, Any] = {"single_post": {}}
        for level in args.levels:
            results["single_post"][str(level)] = await drive(level, args.requests, single, 202)
        batches = max(1, args.batch_traces // args.batch_size)
        # Paced clients measure the latency at a steady load, so they start
        # once the backlog of the runs above is dispatched.
        backlog_seconds = await dispatched(stack)
        # Where the two cores go per trace at that load (the client is this
        # process alone: the meter would count its children, the servers).
        cpu = CpuMeter(
            {"api": stack.pid("api")}
            | {name: stack.pid(name) for name in stack.worker_names}
            | stack.server_pids()
        )
        # The API's sessions' server processes are on this machine only
        # when the stack started PostgreSQL.
        sessions = ApiSessions(stack.database_url) if "postgres" in stack.server_pids() else None
        sampler = WaitSampler(stack.database_url) if args.sample_waits else contextlib.nullcontext()
        answered_before, slow_before = await api_timed_posts(stack.api_url)
        if sessions is not None:
            await sessions.start()
        cpu.start()
        client_started = time.process_time()
        with sampler:
            results["paced_32"] = await drive_paced(32, args.rate, args.requests, single, 202)
        client_seconds = time.process_time() - client_started
        cpu.stop()
        answered, slow = await api_timed_posts(stack.api_url)
        sent = results["paced_32"]["requests"]
        if sessions is not None:
            results["paced_32"]["api_sessions_ms_per_trace"] = await sessions.stop(sent)
        if isinstance(sampler, WaitSampler):
            results["paced_32"]["api_session_waits"] = sampler.summary()
        # Beside the client's share of slow requests, the API's by its own timer.
        results["paced_32"]["over_50ms_pct"]["api"] = round(
            100 * (slow - slow_before) / (answered - answered_before), 2
        )
        results["paced_32"]["cpu_ms_per_trace"] = {
            "client": round(1000 * client_seconds / sent, 1),
            **cpu.per_item_ms(sent),
        }
        # How long each process's threads were ready to run but had no core.
        results["paced_32"]["run_queue_wait_ms_per_trace"] = cpu.waited_per_item_ms(sent)
        results["paced_32"]["waited_for_dispatch_backlog_s"] = backlog_seconds
        results["batch"] = await drive(2, batches, batch, 202, items_per_request=args.batch_size)
        results["batch"]["batch_size"] = args.batch_size
        # While the API still dispatches the batches' traces, and once it has.
        results["health_while_dispatching"] = await drive(1, args.requests, health, 200)
        await dispatched(stack)
        results["health"] = await drive(1, args.requests, health, 200)
    finally:
        await client.aclose()
    results["api_rss_mb"] = rss_mb(stack.pid("api"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="single POSTs per concurrency level")
    parser.add_argument(
        "--levels", type=lambda text: [int(x) for x in text.split(",")], default=[1, 8, 32, 64]
    )
    parser.add_argument("--rate", type=float, default=150.0, help="traces/s offered by the paced clients")
    parser.add_argument("--batch-traces", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--sample-waits",
        action="store_true",
        help="sample what the API's database sessions wait for during the paced runs (costs some CPU)",
    )
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
