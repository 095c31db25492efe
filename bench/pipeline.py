"""End-to-end evaluation throughput, against the bare Temporal ceiling of the same shape.

Run from the repository root::

    python -m bench.pipeline [--traces 600] [--judge-latency-ms 0] [--workers 1] [--warm-up 54]

1. Pipeline: starts the stack (``bench/stack.py``) with ``--workers`` worker
   processes and an LLM judge per domain served by the local fake provider
   (``tests/fake_llm.py``, answering after ``--judge-latency-ms``). Submits
   ``--traces`` realistic traces at once through the batch endpoint: the
   labelled sets under ``tests/data`` (five domains, about half unsafe), so
   a realistic share escalates to the judge or to review. Measures until
   every trace has its automated verdict (``completed``, or
   ``awaiting_review`` for those an expert should see). First, not
   measured, ``--warm-up`` traces spread over the five domains go through
   the same way: what a process does once (the provider SDK imported by
   the first judge call, each pack compiled on first use, statements
   prepared on each pooled connection) is not what it does per trace.
2. Ceiling: the same server, the same number of worker processes with the
   same settings, running ``bench/ceiling.py``'s workflow, whose activities
   do nothing: per workflow the same sequence of activities, on the same
   queues, as the pipeline's histories show; after a warm-up of as many
   workflows as the pipeline's.

Prints one JSON object: traces/s and time to final status for both, their
ratio, the activities per trace, the CPU each process spent per trace in
each phase (``cpu_ms_per_trace``: the API, the workers, and the Temporal
server and PostgreSQL when the stack started them), and the peak RSS of
the API and a worker.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.ceiling import WORKFLOW_NAME, NoopEvaluationInput
from bench.stack import CpuMeter, Stack, create_organization, now, rss_mb, use_fake_judge
from bench.tiers01 import percentile
from core.db import create_engine
from core.settings import Settings
from domains import load_domain_pack
from models.schemas import workflow_id_for
from models.tables import EvaluationResult, Trace
from tests.fake_llm import FakeLLM, Reply

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "data" / "labelled_traces.yaml"
FINAL = ("completed", "failed", "awaiting_review")
CEILING_QUEUES = {"evaluations": "bench-ceiling-evaluations", "judge": "bench-ceiling-judge"}
HISTORY_SAMPLE = 60
P0_CLAIM_PER_WORKER = 10.0  # traces/s per worker promised by the design this replaces


def workload(count: int) -> list[dict[str, Any]]:
    """``count`` traces cycling through the labelled set (each with a unique external id)."""
    traces = yaml.safe_load(LABELLED.read_text())["traces"]
    fields = ("model", "input", "output", "domain", "rag_contexts", "rl_episode", "metadata")
    items = []
    for number, trace in zip(range(count), itertools.cycle(traces), strict=False):
        item = {key: trace[key] for key in fields if trace.get(key) is not None}
        item.setdefault("model", "gpt-4o-mini")
        items.append({**item, "external_id": f"bench-{number}-{uuid.uuid4().hex[:8]}"})
    return items


def warm_up_workload(count: int) -> list[dict[str, Any]]:
    """``count`` traces spread evenly over the labelled set (all five domains)."""
    if count <= 0:
        return []
    every = workload(len(yaml.safe_load(LABELLED.read_text())["traces"]))
    return every[:: max(1, len(every) // count)][:count]


def judge_reply(domain: str, latency_s: float) -> Reply:
    """A valid 'safe' verdict for the domain's rubric, after ``latency_s``."""
    rubric = [criterion.id for criterion in load_domain_pack(domain).rubric]
    verdict = {
        "rating": "safe",
        "criteria": [{"criterion": c, "score": 0.9, "reasoning": "Fine."} for c in rubric],
        "issues": [],
        "confidence": 0.9,
        "review_recommended": False,
        "summary": "Looks fine.",
    }
    return Reply.hang(latency_s, Reply.json(verdict, input_tokens=600, output_tokens=120))


class PeakRss:
    """Samples the RSS of some processes every 0.2 s; keeps the peak of each."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def submit(api: httpx.AsyncClient, traces: list[dict[str, Any]]) -> list[str]:
    trace_ids: list[str] = []
    for start in range(0, len(traces), 500):
        response = await api.post("/api/v1/traces/batch", json={"traces": traces[start : start + 500]})
        response.raise_for_status()
        trace_ids += [item["trace_id"] for item in response.json()["results"]]
    return trace_ids


async def wait_until_final(connection: AsyncConnection, ids: list[uuid.UUID], deadline: float) -> None:
    while True:
        done = await connection.scalar(select(func.count()).where(Trace.id.in_(ids), Trace.status.in_(FINAL)))
        await connection.rollback()  # a fresh snapshot for the next poll
        if done == len(ids):
            return
        if now() > deadline:
            raise SystemExit(f"pipeline: {done} of {len(ids)} final in time")
        await asyncio.sleep(0.2)


async def run_pipeline(
    stack: Stack, fake: FakeLLM, args: argparse.Namespace, cpu: CpuMeter
) -> dict[str, Any]:
    key = await create_organization(stack.api_url)
    headers = {"Authorization": f"Bearer {key}"}
    traces = workload(args.traces)
    engine = create_engine(Settings(database_url=stack.database_url))
    try:
        async with (
            httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=120) as api,
            engine.connect() as connection,
        ):
            for domain in sorted({t["domain"] for t in traces}):
                model = f"bench-judge-{domain}-{uuid.uuid4().hex[:6]}"
                fake.script(model, judge_reply(domain, args.judge_latency_ms / 1000))
                await use_fake_judge(api, domain, model, fake.url)
            warm_up = await submit(api, warm_up_workload(args.warm_up))
            await wait_until_final(connection, [uuid.UUID(i) for i in warm_up], now() + args.timeout)

            cpu.start()
            started = now()
            trace_ids = await submit(api, traces)
            submitted = now()
            ids = [uuid.UUID(trace_id) for trace_id in trace_ids]
            await wait_until_final(connection, ids, started + args.timeout)
            finished = now()
            cpu.stop()
            rows = (
                (
                    await connection.execute(
                        select(
                            func.extract("epoch", EvaluationResult.created_at - Trace.created_at).label(
                                "seconds"
                            ),
                            Trace.status,
                            EvaluationResult.decided_by,
                        )
                        .join(
                            EvaluationResult,
                            (EvaluationResult.trace_id == Trace.id) & (EvaluationResult.version == 1),
                        )
                        .where(Trace.id.in_(ids))
                    )
                )
                .mappings()
                .all()
            )
    finally:
        await engine.dispose()
    to_final = sorted(float(row["seconds"]) for row in rows)
    elapsed = finished - started
    return {
        "traces": len(trace_ids),
        "ingest_seconds": round(submitted - started, 2),
        "seconds": round(elapsed, 2),
        "traces_per_second": round(len(trace_ids) / elapsed, 1),
        "time_to_final_p50_s": round(percentile(to_final, 0.5), 2),
        "time_to_final_p95_s": round(percentile(to_final, 0.95), 2),
        "decided_by": dict(sorted(_count(row["decided_by"] for row in rows).items())),
        "awaiting_review": sum(row["status"] == "awaiting_review" for row in rows),
        "trace_ids": trace_ids,
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


async def activity_shapes(client: Client, trace_ids: list[str]) -> tuple[list[list[str]], dict[str, float]]:
    """Per sampled workflow, the queue kind ("evaluations" or "judge") of each
    activity it ran; and the mean count of history events by type."""
    shapes = []
    events: dict[str, int] = {}
    sample = trace_ids[:: max(1, len(trace_ids) // HISTORY_SAMPLE)]
    for trace_id in sample:
        history = await client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id))).fetch_history()
        scheduled = [
            event.activity_task_scheduled_event_attributes.task_queue.name
            for event in history.events
            if event.HasField("activity_task_scheduled_event_attributes")
        ]
        shapes.append(["judge" if "judge" in queue else "evaluations" for queue in scheduled])
        for event in history.events:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
            events[name] = events.get(name, 0) + 1
    return shapes, {name: round(count / len(sample), 2) for name, count in sorted(events.items())}


async def run_ceiling(
    client: Client, shapes: list[list[str]], count: int, timeout: float, upserts_per_step: int = 0
) -> dict[str, Any]:
    limiter = asyncio.Semaphore(32)  # as many starts in flight as ingestion uses
    latencies: list[float] = []

    async def one(number: int, shape: list[str]) -> None:
        async with limiter:
            begun = now()
            handle = await client.start_workflow(
                WORKFLOW_NAME,
                NoopEvaluationInput(
                    steps=[CEILING_QUEUES[kind] for kind in shape], upserts_per_step=upserts_per_step
                ),
                id=f"bench-ceiling-{number}-{uuid.uuid4().hex[:6]}",
                task_queue=CEILING_QUEUES["evaluations"],
            )
        await handle.result()
        latencies.append(now() - begun)

    started = now()
    await asyncio.wait_for(
        asyncio.gather(
            *(one(n, shape) for n, shape in zip(range(count), itertools.cycle(shapes), strict=False))
        ),
        timeout,
    )
    elapsed = now() - started
    latencies.sort()
    return {
        "workflows": count,
        "seconds": round(elapsed, 2),
        "traces_per_second": round(count / elapsed, 1),
        "time_to_final_p50_s": round(percentile(latencies, 0.5), 2),
        "time_to_final_p95_s": round(percentile(latencies, 0.95), 2),
    }


async def shapes_and_ceiling(
    stack: Stack, trace_ids: list[str], timeout: float, cpu: CpuMeter, warm_up: int
) -> tuple[list[list[str]], dict[str, Any]]:
    # The stack's processes run without a payload key: plain pydantic payloads.
    client = await Client.connect(stack.temporal_address or "", data_converter=pydantic_data_converter)
    shapes, events = await activity_shapes(client, trace_ids)
    if warm_up > 0:
        await run_ceiling(client, shapes, warm_up, timeout)
    cpu.start()
    ceiling = await run_ceiling(client, shapes, len(trace_ids), timeout)
    cpu.stop()
    # The same, with one search-attribute update after each activity (the
    # pipeline keeps its status, tier and severity visible that way).
    with_updates = await run_ceiling(client, shapes, len(trace_ids), timeout, upserts_per_step=1)
    return shapes, {
        **ceiling,
        "cpu_ms_per_trace": cpu.per_item_ms(len(trace_ids)),
        "with_a_search_attribute_update_per_activity": with_updates,
        "pipeline_history_events_per_trace": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=600)
    parser.add_argument("--judge-latency-ms", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (pipeline and ceiling)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    parser.add_argument(
        "--warm-up", type=int, default=54, help="traces (and ceiling workflows) run first, not measured"
    )
    args = parser.parse_args()

    env = {"AEGIS_ALLOW_PRIVATE_URLS": "true", "AEGIS_SECRET_KEY": Fernet.generate_key().decode()}
    output: dict[str, Any] = {
        "python": sys.version.split()[0],
        "workers": args.workers,
        "judge_latency_ms": args.judge_latency_ms,
        "warm_up": args.warm_up,
    }
    with FakeLLM() as fake, Stack(workers=args.workers, extra_env=env) as stack:
        # Where the two cores go, per trace: throughput is what they allow.
        cpu = CpuMeter(
            {"api": stack.pid("api"), **{n: stack.pid(n) for n in stack.worker_names}, **stack.server_pids()}
        )
        with PeakRss({"api": stack.pid("api"), "worker": stack.pid("worker-0")}) as memory:
            pipeline = asyncio.run(run_pipeline(stack, fake, args, cpu))
        trace_ids = pipeline.pop("trace_ids")
        output["pipeline"] = {**pipeline, "cpu_ms_per_trace": cpu.per_item_ms(len(trace_ids))}
        output["peak_rss_mb"] = memory.peak

        for name in stack.worker_names:
            stack.stop(name)
        for number in range(args.workers):
            stack.start_process(
                f"ceiling-{number}",
                [sys.executable, "-m", "bench.ceiling"],
                {
                    "AEGIS_TASK_QUEUE": CEILING_QUEUES["evaluations"],
                    "AEGIS_JUDGE_TASK_QUEUE": CEILING_QUEUES["judge"],
                },
            )
        ceiling_cpu = CpuMeter(
            {
                "api": stack.pid("api"),
                **{f"ceiling-{n}": stack.pid(f"ceiling-{n}") for n in range(args.workers)},
            }
            | stack.server_pids()
        )
        shapes, ceiling = asyncio.run(
            shapes_and_ceiling(stack, trace_ids, args.timeout, ceiling_cpu, args.warm_up)
        )
        lengths = [len(shape) for shape in shapes]
        output["activities_per_trace"] = {
            "mean": round(statistics.fmean(lengths), 2),
            "judge_share": round(sum("judge" in shape for shape in shapes) / len(shapes), 2),
            "sampled_workflows": len(shapes),
        }
        output["ceiling"] = ceiling
        output["ratio_to_ceiling"] = round(pipeline["traces_per_second"] / ceiling["traces_per_second"], 2)
        output["p0_claim_traces_per_second"] = P0_CLAIM_PER_WORKER * args.workers
    print(json.dumps(output))


if __name__ == "__main__":
    main()
