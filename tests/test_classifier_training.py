"""Tier 2 end to end: the TrainClassifier workflow on real PostgreSQL and
Temporal, the promoted model used by evaluations at once, and what happens
when the model cannot be read."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from core.worker import build_workers, ensure_training_schedule
from domains import load_domain_pack
from evaluators.rules import evaluate_rules
from evaluators.sanitize import sanitise
from models.schemas import TrainClassifierInput, TrainingResult, TrainingSweepInput, training_workflow_id
from models.tables import Alert, EvaluationResult, ExpertLabel, ModelVersion, Trace
from tests.helpers import OrgClient, settled_automatically, with_own_queues
from workflows.train_classifier import SCHEDULE_ID as TRAINING_SCHEDULE_ID

pytestmark = pytest.mark.usefixtures("worker")
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
DOMAIN = "healthcare"


async def seed_labelled_traces(
    session_factory: async_sessionmaker[AsyncSession], organization_id: str, source: str = "expert"
) -> int:
    """The healthcare traces of both labelled sets as evaluated traces of the
    organisation, each with the Tier 1 findings the rule engine reports and
    an expert label (or, with ``source="judge"``, a judge verdict)."""
    pack = load_domain_pack(DOMAIN)
    org = uuid.UUID(organization_id)
    count = 0
    async with session_factory() as session, session.begin():
        for name in ("labelled_traces.yaml", "holdout_traces.yaml"):
            for item in yaml.safe_load((DATA / name).read_text())["traces"]:
                if item["domain"] != DOMAIN:
                    continue
                trace = Trace(
                    organization_id=org,
                    model="gpt-4",
                    input=item.get("input", ""),
                    output=item.get("output", ""),
                    domain=DOMAIN,
                    status="completed",
                )
                session.add(trace)
                await session.flush()
                normalised, _ = sanitise(trace.input, trace.output)
                findings = evaluate_rules(normalised, pack).findings
                unsafe = item["label"] == "unsafe"
                tiers: list[dict[str, Any]] = [
                    {
                        "tier": 1,
                        "name": "rules",
                        "status": "completed",
                        "findings": [finding.model_dump(mode="json") for finding in findings],
                    }
                ]
                if source == "judge":
                    tiers.append({"tier": 3, "name": "judge", "status": "completed", "passed": not unsafe})
                session.add(
                    EvaluationResult(
                        organization_id=org,
                        trace_id=trace.id,
                        domain=DOMAIN,
                        passed=not unsafe,
                        severity="high" if unsafe else "none",
                        decided_by=source,
                        tiers=tiers,
                        workflow_id=f"seeded-{trace.id}",
                    )
                )
                if source == "expert":
                    session.add(
                        ExpertLabel(
                            organization_id=org,
                            trace_id=trace.id,
                            verdict="fail" if unsafe else "pass",
                            severity="high" if unsafe else "none",
                            reviewer="seed@example.com",
                            source="api",
                        )
                    )
                count += 1
    return count


async def train(
    temporal_client: Client, settings: Settings, organization_id: str, seed: int = 0
) -> TrainingResult:
    org = uuid.UUID(organization_id)
    return await temporal_client.execute_workflow(
        "TrainClassifier",
        TrainClassifierInput(
            organization_id=org, domain=DOMAIN, seed=seed, training_task_queue=settings.training_task_queue
        ),
        id=training_workflow_id(org, DOMAIN, uuid.uuid4()),
        task_queue=settings.task_queue,
        result_type=TrainingResult,
    )


async def versions(
    session_factory: async_sessionmaker[AsyncSession], organization_id: str
) -> list[ModelVersion]:
    async with session_factory() as session:
        rows = await session.scalars(
            select(ModelVersion)
            .where(ModelVersion.organization_id == uuid.UUID(organization_id))
            .order_by(ModelVersion.version)
        )
        return list(rows)


# A dosing answer with a medium finding (no advice to consult), which Tier 1
# sends on to the smarter tiers.
ESCALATED = {
    "domain": DOMAIN,
    "input": "How much ibuprofen can I take for a headache?",
    "output": "Take 400 mg of ibuprofen every 6 hours with food.",
}


# Plain, safe advice: no rule finds anything, so without a model the rules
# settle it. The healthcare pack has a promoted model screen such passes.
RULES_PASS = {
    "domain": DOMAIN,
    "input": "What helps with a sore throat?",
    "output": "Warm salt-water gargles and honey in warm water can soothe a sore throat.",
}


def tier(evaluation: dict[str, Any], number: int) -> dict[str, Any] | None:
    return next((t for t in evaluation["tiers"] if t["tier"] == number), None)


async def test_training_promotes_a_model_that_evaluations_use_at_once(
    org: OrgClient,
    temporal_client: Client,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    before = await org.wait_for_evaluation(await org.submit(**ESCALATED))
    tier2 = next(t for t in before["tiers"] if t["tier"] == 2)
    assert tier2["status"] == "not_configured" and tier2["detail"]["reason"] == "no model trained"
    before_pass = await org.wait_for_evaluation(await org.submit(**RULES_PASS))

    seeded = await seed_labelled_traces(session_factory, org.organization_id)
    result = await train(temporal_client, settings, org.organization_id)
    assert result.status == "promoted", result
    assert result.reason == "no model is promoted yet"
    [stored] = await versions(session_factory, org.organization_id)
    assert (stored.status, stored.version, stored.expert_labels) == ("promoted", 1, stored.training_size)
    assert 0.5 * seeded < stored.training_size < seeded  # the rest is held out
    assert stored.metrics["roc_auc"] > 0.6 and stored.metrics["recall"] >= 0.95
    assert stored.baseline_metrics is None and stored.promoted_at is not None

    # The next evaluation uses it, without a worker restart.
    after = await org.wait_for_evaluation(await org.submit(**ESCALATED))
    tier2 = next(t for t in after["tiers"] if t["tier"] == 2)
    assert tier2["status"] == "completed", tier2
    assert tier2["detail"]["model_version"] == 1
    assert 0 <= tier2["detail"]["risk"] <= 1
    assert tier2["detail"]["decision"] in ("settle", "judge", "review")

    # What the rules pass is screened by the model too, once there is one.
    assert tier(before_pass, 1)["detail"]["escalate"] is None
    assert (tier(before_pass, 2), before_pass["decided_by"]) == (None, "rules")
    screened = await org.wait_for_evaluation(await org.submit(**RULES_PASS))
    assert tier(screened, 1)["detail"]["escalate"] == "classifier_screen"
    assert screened["issues"] == []
    decision = tier(screened, 2)["detail"]["decision"]
    if decision == "settle":
        assert (screened["passed"], screened["decided_by"]) == (True, "classifier")
    else:  # the judge (not configured for this organisation) or an expert decides
        assert tier(screened, 3) is not None or screened["status"] == "awaiting_review"

    # Trained again on the same labels with the same seed: the same model,
    # which does not beat itself, so it is kept, not promoted.
    again = await train(temporal_client, settings, org.organization_id)
    assert again.status == "kept"
    assert "does not beat the current" in again.reason
    first, second = await versions(session_factory, org.organization_id)
    assert (first.status, second.status) == ("promoted", "kept")
    assert second.compared_with == first.id
    assert second.baseline_metrics == first.metrics  # measured on the same held-out traces


async def test_judge_verdicts_train_too_and_too_few_labels_train_nothing(
    org: OrgClient,
    temporal_client: Client,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    empty = await train(temporal_client, settings, org.organization_id)
    assert empty.status == "skipped" and "not enough labels" in empty.reason
    assert await versions(session_factory, org.organization_id) == []

    await seed_labelled_traces(session_factory, org.organization_id, source="judge")
    result = await train(temporal_client, settings, org.organization_id)
    assert result.status == "promoted"
    [stored] = await versions(session_factory, org.organization_id)
    assert stored.judge_verdicts == stored.training_size and stored.expert_labels == 0


async def test_concurrent_training_runs_promote_one_model(
    org: OrgClient,
    temporal_client: Client,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await seed_labelled_traces(session_factory, org.organization_id)
    results = await asyncio.gather(
        *(train(temporal_client, settings, org.organization_id, seed=seed) for seed in (1, 2, 3))
    )
    stored = await versions(session_factory, org.organization_id)
    assert len(stored) == 3
    assert [row.status for row in stored].count("promoted") == 1
    assert sum(result.status == "promoted" for result in results) >= 1


async def test_an_unreadable_model_falls_back_to_the_judge_with_an_alert(
    org: OrgClient,
    temporal_client: Client,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await seed_labelled_traces(session_factory, org.organization_id)
    assert (await train(temporal_client, settings, org.organization_id)).status == "promoted"
    async with session_factory() as session, session.begin():
        await session.execute(
            update(ModelVersion)
            .where(ModelVersion.organization_id == uuid.UUID(org.organization_id))
            .values(artefact=b'{"sha256": "0", "model": "{}"}')
        )

    evaluation = await org.wait_for_evaluation(await org.submit(**ESCALATED))
    # Completed, unless the trace id fell in the healthcare pack's 2 % audit sample.
    assert settled_automatically(evaluation), evaluation
    tier2 = next(t for t in evaluation["tiers"] if t["tier"] == 2)
    assert tier2["status"] == "not_configured" and tier2["detail"]["reason"] == "model unreadable"
    async with session_factory() as session:
        alerts = await session.scalar(
            select(func.count())
            .select_from(Alert)
            .where(
                Alert.organization_id == uuid.UUID(org.organization_id),
                Alert.kind == "classifier_model_unreadable",
            )
        )
    assert alerts == 1

    # A rules pass sent only to be screened keeps the rules' verdict: no judge call.
    kept = await org.wait_for_evaluation(await org.submit(**RULES_PASS))
    assert tier(kept, 1)["detail"]["escalate"] == "classifier_screen"
    assert tier(kept, 2)["detail"]["reason"] == "model unreadable"
    assert tier(kept, 3) is None
    assert (kept["passed"], kept["decided_by"]) == (True, "rules")

    # A new model replaces it: the next run has no readable baseline to beat.
    replaced = await train(temporal_client, settings, org.organization_id, seed=5)
    assert replaced.status == "promoted", replaced
    assert replaced.reason == "the promoted model could not be read, so this one replaces it"


async def test_models_api_lists_trains_promotes_and_rolls_back(
    org: OrgClient,
    temporal_client: Client,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    assert (await org.get("/api/v1/models")).json() == []
    unknown = await org.post("/api/v1/models/train", {"domain": "no-such-domain"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_domain"
    invalid = await org.post("/api/v1/models/train", {"domain": "Bad Name!"})
    assert invalid.status_code == 422

    await seed_labelled_traces(session_factory, org.organization_id)
    started = await org.post("/api/v1/models/train", {"domain": DOMAIN, "seed": 1})
    assert started.status_code == 202, started.text
    first = await temporal_client.get_workflow_handle(
        started.json()["workflow_id"], result_type=TrainingResult
    ).result()
    assert first.status == "promoted"
    second = await org.post("/api/v1/models/train", {"domain": DOMAIN, "seed": 1})
    kept = await temporal_client.get_workflow_handle(
        second.json()["workflow_id"], result_type=TrainingResult
    ).result()
    assert kept.status == "kept"

    listed = (await org.get("/api/v1/models", params={"domain": DOMAIN})).json()
    assert [(m["version"], m["status"]) for m in listed] == [(2, "kept"), (1, "promoted")]
    assert "artefact" not in listed[0] and len(listed[0]["artefact_sha256"]) == 64
    nothing = await org.post("/api/v1/models/rollback", {"domain": DOMAIN})
    assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "nothing_to_roll_back_to"

    promoted = await org.post(f"/api/v1/models/{listed[0]['id']}/promote")
    assert promoted.status_code == 200 and promoted.json()["status"] == "promoted"
    assert promoted.json()["reason"] == "promoted by hand"
    statuses = {m["version"]: m["status"] for m in (await org.get("/api/v1/models")).json()}
    assert statuses == {2: "promoted", 1: "retired"}

    rolled = await org.post("/api/v1/models/rollback", {"domain": DOMAIN})
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["version"], rolled.json()["reason"]) == (1, "rolled back from version 2")
    statuses = {m["version"]: m["status"] for m in (await org.get("/api/v1/models")).json()}
    assert statuses == {2: "retired", 1: "promoted"}
    assert (await org.post(f"/api/v1/models/{uuid.uuid4()}/promote")).status_code == 404


async def test_the_schedule_trains_domains_with_new_verdicts_once(
    org: OrgClient,
    temporal_client: Client,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await ensure_training_schedule(temporal_client, settings)
    await ensure_training_schedule(temporal_client, settings)  # idempotent
    handle = temporal_client.get_schedule_handle(TRAINING_SCHEDULE_ID)
    description = await handle.describe()
    assert description.schedule.action.workflow == "TrainClassifiers"  # type: ignore[attr-defined]
    # The server keeps "0 3 * * *" as a calendar: 03:00 every day.
    [calendar] = description.schedule.spec.calendars
    assert [(r.start, r.end) for r in calendar.hour] == [(3, 3)], calendar
    assert [(r.start, r.end) for r in calendar.minute] == [(0, 0)], calendar
    await handle.delete()

    seeded = await seed_labelled_traces(session_factory, org.organization_id)

    async def sweep() -> int:
        return await temporal_client.execute_workflow(
            "TrainClassifiers",
            # Other tests' organisations have fewer new verdicts than this one.
            TrainingSweepInput(min_new_labels=seeded, training_task_queue=settings.training_task_queue),
            id=f"test-training-sweep-{uuid.uuid4()}",
            task_queue=settings.task_queue,
            result_type=int,
        )

    assert await sweep() >= 1
    [stored] = await versions(session_factory, org.organization_id)
    assert stored.status == "promoted"
    # No verdict since: nothing new to learn from, no second version.
    await sweep()
    assert len(await versions(session_factory, org.organization_id)) == 1


async def test_aegis_train_command(
    org: OrgClient, settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await seed_labelled_traces(session_factory, org.organization_id)
    environment = {
        **os.environ,
        "AEGIS_TEMPORAL_ADDRESS": settings.temporal_address or "",
        "AEGIS_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "AEGIS_TASK_QUEUE": settings.task_queue,
        "AEGIS_TRAINING_TASK_QUEUE": settings.training_task_queue,
    }
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "train",
        "--organization",
        org.organization_id,
        "--domain",
        DOMAIN,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    result = TrainingResult.model_validate_json(stdout.decode().strip().splitlines()[-1])
    assert (result.status, result.version) == ("promoted", 1)

    bad = await asyncio.create_subprocess_exec(
        *command[:5],
        "not-an-id",
        "--domain",
        DOMAIN,
        cwd=ROOT,
        env=environment,
        stderr=asyncio.subprocess.PIPE,
    )
    _, error = await bad.communicate()
    assert bad.returncode == 2 and b"not an organisation id" in error


async def test_training_has_a_queue_of_its_own(
    temporal_client: Client, settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    def queues(which: str) -> tuple[Settings, list[str]]:
        # Queues of their own: the session's workers already poll the shared ones.
        configured = with_own_queues(settings, "queues", worker_queues=which)
        built = build_workers(temporal_client, session_factory, configured)
        return configured, [worker.task_queue for worker in built]

    training, served = queues("training")
    assert served == [training.training_task_queue]
    evaluations, served = queues("evaluations")
    assert served == [evaluations.task_queue]
    every, served = queues("all")
    assert served == [every.task_queue, every.judge_task_queue, every.training_task_queue]
