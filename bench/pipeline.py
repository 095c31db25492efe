"""End-to-end evaluation throughput, against the bare Temporal ceiling of the same shape.

Run from the repository root::

    python -m bench.pipeline [--traces 800] [--rounds 2] [--judge-latency-ms 0] [--workers 1] [--warm-up 54]
                             [--temporal-apart]

Starts the stack (``bench/stack.py``) with ``--workers`` worker processes
and as many ceiling workers beside them, and alternates two phases over
``--rounds`` rounds, each round on its share of ``--traces``: pipeline then
ceiling in even rounds, ceiling then pipeline in odd ones. The machine's
speed drifts by tens of percent over minutes; phases that alternate over
the same minutes see the same drift.

1. Pipeline: an LLM judge per domain served by the local fake provider
   (``tests/fake_llm.py``, answering after ``--judge-latency-ms``). Submits
   the round's realistic traces at once through the batch endpoint: the
   labelled sets under ``tests/data`` (five domains, about half unsafe), so
   a realistic share escalates to the judge or to review. Measures until
   every trace has its automated verdict (``completed``, or
   ``awaiting_review`` for those an expert should see), then waits, not
   measured, until the workflows have finished what follows the verdict.
   First, not measured, ``--warm-up`` traces spread over the five domains
   go through the same way: what a process does once (the provider SDK
   imported by the first judge call, each pack compiled on first use,
   statements prepared on each pooled connection) is not what it does per
   trace.
2. Ceiling: the same server, the same number of worker processes with the
   same settings, running ``bench/ceiling.py``'s workflow, whose activities
   do nothing: per workflow the same sequence of activities, on the same
   queues, as the first round's pipeline histories show; after a warm-up of
   as many workflows as the pipeline's.

With ``--temporal-apart`` the Temporal server runs on a CPU of its own and
everything else (PostgreSQL, the API, the workers, this process) on the
others, as in a deployment where Temporal runs apart from Aegis: the ratio
then shows what the evaluation costs the Temporal server, without its own
work competing with the server for the same cores.

Prints one JSON object: traces/s and time to final status for both over
all rounds, their ratio, each round's throughputs and ratio, the
activities per trace, the CPU each process spent per trace in
each phase (``cpu_ms_per_trace``: the API, the workers, and the Temporal
server and PostgreSQL when the stack started them), the CPUs each of those
processes may run on (``cpus``), and the peak RSS of the API and a worker.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
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
from core.dispatch import WORKFLOW_NAME as EVALUATION_WORKFLOW
from core.search_attributes import STATUS
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
        # Often enough near the end that the phase's measured time is not
        # up to a whole interval longer than its work (the ceiling's is exact).
        await asyncio.sleep(0.2 if len(ids) - done > len(ids) // 20 else 0.02)


async def prepare(
    api: httpx.AsyncClient, connection: AsyncConnection, fake: FakeLLM, args: argparse.Namespace
) -> None:
    """An LLM judge per domain on the fake provider, and the warm-up traces."""
    for domain in sorted({t["domain"] for t in yaml.safe_load(LABELLED.read_text())["traces"]}):
        model = f"bench-judge-{domain}-{uuid.uuid4().hex[:6]}"
        fake.script(model, judge_reply(domain, args.judge_latency_ms / 1000))
        await use_fake_judge(api, domain, model, fake.url)
    warm_up = await submit(api, warm_up_workload(args.warm_up))
    await wait_until_final(connection, [uuid.UUID(i) for i in warm_up], now() + args.timeout)


async def run_pipeline(
    api: httpx.AsyncClient,
    connection: AsyncConnection,
    traces: list[dict[str, Any]],
    timeout: float,
    cpu: CpuMeter,
) -> tuple[list[str], float]:
    """Submit ``traces`` at once and wait until each has its automated
    verdict; the trace ids and the seconds that took."""
    cpu.start()
    started = now()
    trace_ids = await submit(api, traces)
    await wait_until_final(connection, [uuid.UUID(i) for i in trace_ids], started + timeout)
    elapsed = now() - started
    cpu.stop()
    return trace_ids, elapsed


async def pipeline_summary(
    connection: AsyncConnection, trace_ids: list[str], seconds: float
) -> dict[str, Any]:
    """Throughput, time to final status and who decided, over every measured trace."""
    ids = [uuid.UUID(trace_id) for trace_id in trace_ids]
    rows = (
        (
            await connection.execute(
                select(
                    func.extract("epoch", EvaluationResult.created_at - Trace.created_at).label("seconds"),
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
    to_final = sorted(float(row["seconds"]) for row in rows)
    return {
        "traces": len(trace_ids),
        "seconds": round(seconds, 2),
        "traces_per_second": round(len(trace_ids) / seconds, 1),
        "time_to_final_p50_s": round(percentile(to_final, 0.5), 2),
        "time_to_final_p95_s": round(percentile(to_final, 0.95), 2),
        "decided_by": dict(sorted(_count(row["decided_by"] for row in rows).items())),
        "awaiting_review": sum(row["status"] == "awaiting_review" for row in rows),
    }


async def settle(client: Client, timeout: float) -> None:
    """Wait until the evaluations have finished what follows their verdict
    (alert delivery, the last search-attribute update, completing), so
    that no phase pays for the one before it. Those awaiting review wait
    for an expert, not for the cores."""
    deadline = now() + timeout
    while now() < deadline:
        busy = await client.count_workflows(
            f'WorkflowType="{EVALUATION_WORKFLOW}" AND ExecutionStatus="Running" '
            f'AND {STATUS.name}!="awaiting_review"'
        )
        if busy.count == 0:
            return
        await asyncio.sleep(0.2)
    raise SystemExit("pipeline: evaluations still running after their verdicts")


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
    client: Client,
    shapes: list[list[str]],
    count: int,
    timeout: float,
    cpu: CpuMeter | None = None,
    upserts_per_step: int = 0,
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

    if cpu:
        cpu.start()
    started = now()
    await asyncio.wait_for(
        asyncio.gather(
            *(one(n, shape) for n, shape in zip(range(count), itertools.cycle(shapes), strict=False))
        ),
        timeout,
    )
    elapsed = now() - started
    if cpu:
        cpu.stop()
    return {"workflows": count, "seconds": elapsed, "latencies": latencies}


def ceiling_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    workflows = sum(run["workflows"] for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    latencies = sorted(latency for run in runs for latency in run["latencies"])
    return {
        "workflows": workflows,
        "seconds": round(seconds, 2),
        "traces_per_second": round(workflows / seconds, 1),
        "time_to_final_p50_s": round(percentile(latencies, 0.5), 2),
        "time_to_final_p95_s": round(percentile(latencies, 0.95), 2),
    }


async def compare(
    stack: Stack, fake: FakeLLM, args: argparse.Namespace, cpu: CpuMeter, ceiling_cpu: CpuMeter
) -> dict[str, Any]:
    """The pipeline and its ceiling in alternating phases, both measured
    over the same minutes: pipeline then ceiling in even rounds, ceiling
    then pipeline in odd ones, so the machine's drift and any trend over
    the run fall on both alike."""
    key = await create_organization(stack.api_url)
    traces = workload(args.traces)
    per_round = -(-len(traces) // args.rounds)
    batches = [traces[start : start + per_round] for start in range(0, len(traces), per_round)]
    # The stack's processes run without a payload key: plain pydantic payloads.
    client = await Client.connect(stack.temporal_address or "", data_converter=pydantic_data_converter)
    engine = create_engine(Settings(database_url=stack.database_url))
    trace_ids: list[str] = []
    pipeline_seconds = 0.0
    ceiling_runs: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    shapes: list[list[str]] = []
    events: dict[str, float] = {}
    try:
        async with (
            httpx.AsyncClient(
                base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            ) as api,
            engine.connect() as connection,
        ):
            await prepare(api, connection, fake, args)
            await settle(client, args.timeout)
            for number, batch in enumerate(batches):
                measured: dict[str, float] = {}
                for phase in ("pipeline", "ceiling") if number % 2 == 0 else ("ceiling", "pipeline"):
                    if phase == "pipeline":
                        ids, seconds = await run_pipeline(api, connection, batch, args.timeout, cpu)
                        trace_ids += ids
                        pipeline_seconds += seconds
                        await settle(client, args.timeout)
                        if not shapes:  # the first round runs the pipeline first
                            shapes, events = await activity_shapes(client, ids)
                            await run_ceiling(client, shapes, args.warm_up, args.timeout)
                    else:
                        run = await run_ceiling(client, shapes, len(batch), args.timeout, ceiling_cpu)
                        ceiling_runs.append(run)
                        seconds = run["seconds"]
                    measured[phase] = len(batch) / seconds
                rounds.append(
                    {
                        "first": "pipeline" if number % 2 == 0 else "ceiling",
                        "traces": len(batch),
                        "pipeline_traces_per_second": round(measured["pipeline"], 1),
                        "ceiling_traces_per_second": round(measured["ceiling"], 1),
                        "ratio": round(measured["pipeline"] / measured["ceiling"], 2),
                    }
                )
            pipeline = await pipeline_summary(connection, trace_ids, pipeline_seconds)
    finally:
        await engine.dispose()
    # The same, with one search-attribute update after each activity (the
    # pipeline keeps its status, tier and severity visible that way).
    with_updates = ceiling_summary(
        [await run_ceiling(client, shapes, per_round, args.timeout, upserts_per_step=1)]
    )
    ceiling = ceiling_summary(ceiling_runs)
    lengths = [len(shape) for shape in shapes]
    return {
        "pipeline": {**pipeline, "cpu_ms_per_trace": cpu.per_item_ms(len(trace_ids))},
        "ceiling": {
            **ceiling,
            "cpu_ms_per_trace": ceiling_cpu.per_item_ms(ceiling["workflows"]),
            "with_a_search_attribute_update_per_activity": with_updates,
            "pipeline_history_events_per_trace": events,
        },
        "activities_per_trace": {
            "mean": round(statistics.fmean(lengths), 2),
            "judge_share": round(sum("judge" in shape for shape in shapes) / len(shapes), 2),
            "sampled_workflows": len(shapes),
        },
        "rounds": rounds,
        "ratio_to_ceiling": round(pipeline["traces_per_second"] / ceiling["traces_per_second"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=800)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating pipeline and ceiling phases the traces are split over",
    )
    parser.add_argument("--judge-latency-ms", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (pipeline and ceiling)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    parser.add_argument(
        "--warm-up", type=int, default=54, help="traces (and ceiling workflows) run first, not measured"
    )
    parser.add_argument(
        "--temporal-apart",
        action="store_true",
        help="the Temporal server on a CPU of its own, everything else on the others",
    )
    args = parser.parse_args()

    env = {"AEGIS_ALLOW_PRIVATE_URLS": "true", "AEGIS_SECRET_KEY": Fernet.generate_key().decode()}
    output: dict[str, Any] = {
        "python": sys.version.split()[0],
        "workers": args.workers,
        "judge_latency_ms": args.judge_latency_ms,
        "warm_up": args.warm_up,
        "temporal_apart": args.temporal_apart,
    }
    with (
        FakeLLM() as fake,
        Stack(workers=args.workers, extra_env=env, temporal_apart=args.temporal_apart) as stack,
    ):
        # The ceiling's workers run beside the pipeline's, on their own
        # queues; each is idle while the other phase runs.
        for number in range(args.workers):
            stack.start_process(
                f"ceiling-{number}",
                [sys.executable, "-m", "bench.ceiling"],
                {
                    "AEGIS_TASK_QUEUE": CEILING_QUEUES["evaluations"],
                    "AEGIS_JUDGE_TASK_QUEUE": CEILING_QUEUES["judge"],
                },
            )
        # Where the two cores go, per trace: throughput is what they allow.
        servers = stack.server_pids()
        # Where each process may run, read back from it (see --temporal-apart).
        output["cpus"] = {
            name: sorted(os.sched_getaffinity(pid))
            for name, pid in {"api": stack.pid("api"), "worker-0": stack.pid("worker-0"), **servers}.items()
        }
        cpu = CpuMeter({"api": stack.pid("api"), **{n: stack.pid(n) for n in stack.worker_names}, **servers})
        ceiling_cpu = CpuMeter(
            {
                "api": stack.pid("api"),
                **{f"ceiling-{n}": stack.pid(f"ceiling-{n}") for n in range(args.workers)},
            }
            | servers
        )
        with PeakRss({"api": stack.pid("api"), "worker": stack.pid("worker-0")}) as memory:
            output |= asyncio.run(compare(stack, fake, args, cpu, ceiling_cpu))
        output["peak_rss_mb"] = memory.peak
        output["p0_claim_traces_per_second"] = P0_CLAIM_PER_WORKER * args.workers
    print(json.dumps(output))


if __name__ == "__main__":
    main()
