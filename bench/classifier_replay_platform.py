"""The Tier 2 replay through the running platform (healthcare).

Run from the repository root::

    python -m bench.classifier_replay_platform [--checkpoints 0,100,250,500,1000]
        [--evaluation 500] [--seed 1]

The same generated traces and the same questions as
``bench/classifier_replay.py``, but nothing is simulated: the stack of
``bench/stack.py`` (PostgreSQL, the Temporal dev server, ``aegis api`` and
one ``aegis worker``) evaluates every trace, submitted through
``POST /api/v1/traces/batch``:

- the judge is the healthcare judge configured through the API, served by
  the local fake provider (``tests/fake_llm.py``), which answers each
  prompt with the true label of the trace in it, but wrong for a
  deterministic share (``--judge-error``, default 5 %);
- an expert labels every trace that waits for review, with its true label,
  through ``POST /api/v1/traces/{id}/labels``;
- the labels seen are what ``TrainClassifier`` would train on (judge
  verdicts and expert labels in PostgreSQL); at each checkpoint the script
  starts a run with ``POST /api/v1/models/train`` and waits for its result;
- a fixed evaluation stream of fresh traces is then evaluated with the
  model in use, measured from the stored evaluations, and deleted
  (``DELETE /api/v1/traces/{id}``) so it never becomes training data.

Figures per checkpoint, over the evaluation stream:

- ``tier3_share``: traces the judge was called for;
- ``tier2_settled_share``: traces Tier 2 settled as a pass;
- ``review_share``: traces that wait for an expert;
- ``recall``: unsafe traces not let through (passed by the rules or
  Tier 2 without review) over all unsafe traces;
- ``tier2_recall``: the same over the unsafe traces Tier 2 scored.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.classifier_replay import (
    DOMAIN,
    judge_share_at_500_over_cold_start,
    labelled_trace,
    replay_arguments,
)
from bench.stack import Stack, create_organization, use_fake_judge
from core.classifier_models import export_examples
from core.db import create_engine
from core.settings import Settings
from domains import load_domain_pack
from evaluators.escalation import CLASSIFIER_TIER, JUDGE_TIER, sampled
from evaluators.sanitize import sanitise
from models.schemas import TrainingResult
from models.tables import EvaluationResult, Trace
from tests.fake_llm import FakeLLM, Reply

FINAL = ("completed", "failed", "awaiting_review")
OUTPUT_IN_PROMPT = re.compile(r"BEGIN TRACE OUTPUT (\w+)\n(.*)\nEND TRACE OUTPUT \1", re.DOTALL)
BATCH = 200


class Judge:
    """The fake provider's answer to a judge prompt: the true label of the
    trace it quotes, wrong for a deterministic ``error`` share of texts."""

    def __init__(self, error: float, seed: int) -> None:
        self.error = error
        self.seed = seed
        self.unsafe: dict[str, bool] = {}  # redacted output -> true label
        self.rubric = [criterion.id for criterion in load_domain_pack(DOMAIN).rubric]
        self.unknown = 0

    def learn(self, question: str, output: str, unsafe: bool) -> None:
        self.unsafe[sanitise(question, output)[0].output] = unsafe

    def __call__(self, request: dict[str, Any]) -> Reply:
        prompt = "\n".join(str(message.get("content", "")) for message in request.get("messages", []))
        found = OUTPUT_IN_PROMPT.search(prompt)
        output = found.group(2) if found else ""
        if output not in self.unsafe:
            self.unknown += 1
            return Reply.text("not JSON: the benchmark does not know this trace")
        unsafe = self.unsafe[output] != sampled(f"{self.seed}:{output}", self.error)
        verdict = {
            "rating": "unsafe" if unsafe else "safe",
            "criteria": [
                {"criterion": c, "score": 0.2 if unsafe else 0.9, "reasoning": "-"} for c in self.rubric
            ],
            "issues": (
                [{"category": "clinical_accuracy", "severity": "high", "message": "Unsafe advice."}]
                if unsafe
                else []
            ),
            "confidence": 0.9,
            "review_recommended": False,
            "summary": "Unsafe." if unsafe else "Safe.",
        }
        return Reply.json(verdict, input_tokens=600, output_tokens=120)


@dataclass
class Evaluated:
    unsafe: bool
    status: str
    passed: bool
    decided_by: str
    judged: bool
    scored: bool  # Tier 2 ran a model on it
    settled_by_tier2: bool

    @property
    def let_through(self) -> bool:
        return self.passed and self.decided_by in ("rules", "classifier") and self.status != "awaiting_review"


class Replay:
    def __init__(self, stack: Stack, api: httpx.AsyncClient, temporal: Client, args: argparse.Namespace):
        self.api = api
        self.temporal = temporal
        self.args = args
        self.engine = create_engine(Settings(database_url=stack.database_url))
        self.organization_id: uuid.UUID | None = None
        self.ids: list[str] = []  # the traces of the last submission

    async def submit(self, traces: list[tuple[str, str, bool]]) -> list[Evaluated]:
        """Evaluate ``traces`` on the platform; the automated outcome of each."""
        ids: list[str] = []
        for start in range(0, len(traces), BATCH):
            body = {
                "traces": [
                    {"model": "gpt-4o-mini", "input": question, "output": output, "domain": DOMAIN}
                    for question, output, _ in traces[start : start + BATCH]
                ]
            }
            response = await self.api.post("/api/v1/traces/batch", json=body)
            response.raise_for_status()
            ids += [item["trace_id"] for item in response.json()["results"]]
        rows = await self._wait_final([uuid.UUID(i) for i in ids])
        if self.organization_id is None:
            self.organization_id = rows[uuid.UUID(ids[0])][0].organization_id
        outcomes = []
        for trace_id, (_, _, unsafe) in zip(ids, traces, strict=True):
            trace, result = rows[uuid.UUID(trace_id)]
            tiers = {t.get("tier"): t for t in result.tiers or []}
            outcomes.append(
                Evaluated(
                    unsafe=unsafe,
                    status=trace.status,
                    passed=result.passed,
                    decided_by=result.decided_by,
                    judged=tiers.get(JUDGE_TIER, {}).get("status") == "completed",
                    scored=tiers.get(CLASSIFIER_TIER, {}).get("status") == "completed",
                    settled_by_tier2=tiers.get(CLASSIFIER_TIER, {}).get("detail", {}).get("decision")
                    == "settle",
                )
            )
        self.ids = ids
        return outcomes

    async def _wait_final(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Trace, EvaluationResult]]:
        deadline = time.monotonic() + self.args.timeout
        while True:
            async with AsyncSession(self.engine) as session:  # a fresh snapshot per poll
                rows = (
                    await session.execute(
                        select(Trace, EvaluationResult)
                        .join(
                            EvaluationResult,
                            (EvaluationResult.trace_id == Trace.id) & (EvaluationResult.version == 1),
                        )
                        .where(Trace.id.in_(ids), Trace.status.in_(FINAL))
                    )
                ).all()
            if len(rows) == len(ids):
                return {trace.id: (trace, result) for trace, result in rows}
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(rows)} of {len(ids)} traces final after {self.args.timeout}s")
            await asyncio.sleep(0.25)

    async def label_reviews(self, outcomes: list[Evaluated]) -> int:
        """An expert labels every trace of the last submission that waits for review."""
        waiting = [(i, o) for i, o in zip(self.ids, outcomes, strict=True) if o.status == "awaiting_review"]
        for trace_id, outcome in waiting:
            label = {"verdict": "fail", "severity": "high"} if outcome.unsafe else {"verdict": "pass"}
            response = await self.api.post(
                f"/api/v1/traces/{trace_id}/labels", json={**label, "reviewer": "expert@example.com"}
            )
            response.raise_for_status()
        return len(waiting)

    async def labels(self) -> int:
        """What a training run would train on now: judge verdicts and expert labels."""
        if self.organization_id is None:
            return 0
        async with AsyncSession(self.engine) as session:
            return len(await export_examples(session, self.organization_id, DOMAIN))

    async def delete_last(self) -> None:
        limiter = asyncio.Semaphore(8)

        async def delete(trace_id: str) -> None:
            async with limiter:
                (await self.api.delete(f"/api/v1/traces/{trace_id}")).raise_for_status()

        await asyncio.gather(*(delete(trace_id) for trace_id in self.ids))

    async def train(self) -> dict[str, Any]:
        response = await self.api.post(
            "/api/v1/models/train", json={"domain": DOMAIN, "seed": self.args.seed}
        )
        response.raise_for_status()
        handle = self.temporal.get_workflow_handle(response.json()["workflow_id"], result_type=TrainingResult)
        result = await handle.result()
        models = (await self.api.get("/api/v1/models", params={"domain": DOMAIN})).json()
        promoted = next((m for m in models if m["status"] == "promoted"), None)
        return {
            "training": f"{result.status}: {result.reason}",
            "held_out": promoted["metrics"] if promoted else None,
        }


def measure(outcomes: list[Evaluated]) -> dict[str, float]:
    unsafe = [o for o in outcomes if o.unsafe]
    scored_unsafe = [o for o in unsafe if o.scored]
    return {
        "tier3_share": round(sum(o.judged for o in outcomes) / len(outcomes), 4),
        "tier2_settled_share": round(sum(o.settled_by_tier2 for o in outcomes) / len(outcomes), 4),
        "review_share": round(sum(o.status == "awaiting_review" for o in outcomes) / len(outcomes), 4),
        "recall": round(sum(not o.let_through for o in unsafe) / len(unsafe), 4),
        "tier2_recall": (
            round(sum(not o.let_through for o in scored_unsafe) / len(scored_unsafe), 4)
            if scored_unsafe
            else None
        ),
    }


async def replay(stack: Stack, fake: FakeLLM, args: argparse.Namespace) -> dict[str, Any]:
    judge = Judge(args.judge_error, args.seed)
    model = f"bench-judge-{uuid.uuid4().hex[:8]}"
    fake.respond(model, judge)
    evaluation_rng = random.Random(args.seed + 1_000_003)
    evaluation = [labelled_trace(evaluation_rng) for _ in range(args.evaluation)]
    arrivals_rng = random.Random(args.seed)
    for question, output, unsafe in evaluation:
        judge.learn(question, output, unsafe)

    key = await create_organization(stack.api_url)
    temporal = await Client.connect(stack.temporal_address or "", data_converter=pydantic_data_converter)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as api:
        await use_fake_judge(api, DOMAIN, model, fake.url)
        run = Replay(stack, api, temporal, args)
        try:
            results = []
            arrived = 0
            labels = 0
            per_trace = 0.75  # labels per arriving trace, re-estimated as they come
            for checkpoint in sorted({int(n) for n in args.checkpoints.split(",")}):
                while labels < checkpoint:
                    # Most of the traces that reach the checkpoint at the current
                    # rate (so as not to overshoot it much), a few at least.
                    needed = (checkpoint - labels) / max(per_trace, 0.05)
                    wanted = min(BATCH, max(5, math.ceil(0.8 * needed)))
                    batch = [labelled_trace(arrivals_rng) for _ in range(wanted)]
                    for question, output, unsafe in batch:
                        judge.learn(question, output, unsafe)
                    await run.label_reviews(await run.submit(batch))
                    arrived += wanted
                    before, labels = labels, await run.labels()
                    per_trace = (labels - before) / wanted
                training: dict[str, Any] = {"training": "cold start: no model", "held_out": None}
                if checkpoint:
                    training = await run.train()
                figures = measure(await run.submit(evaluation))
                await run.delete_last()
                results.append({"labels": labels, "traces_arrived": arrived, **training, **figures})
                print(json.dumps(results[-1]), flush=True, file=sys.stderr)  # progress
        finally:
            await run.engine.dispose()
    return {
        "domain": DOMAIN,
        "evaluation_traces": args.evaluation,
        "evaluation_unsafe_share": round(sum(u for _, _, u in evaluation) / len(evaluation), 4),
        "recall_floor": load_domain_pack(DOMAIN).escalation.classifier_recall_floor,
        "judge_error": args.judge_error,
        "judge_prompts_not_recognised": judge.unknown,
        "checkpoints": results,
        "tier3_share_at_500_over_cold_start": judge_share_at_500_over_cold_start(results),
    }


def main() -> None:
    parser = replay_arguments(__doc__, evaluation=500)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for one submission to finish")
    args = parser.parse_args()
    started = time.perf_counter()
    env = {"AEGIS_ALLOW_PRIVATE_URLS": "true", "AEGIS_SECRET_KEY": Fernet.generate_key().decode()}
    with FakeLLM() as fake, Stack(workers=1, extra_env=env) as stack:
        output = asyncio.run(replay(stack, fake, args))
    print(json.dumps({**output, "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
