"""Train the Tier 2 model of one organisation's domain, then promote it or
keep it: on demand (``POST /api/v1/models/train``, ``aegis train``), and for
every domain with enough new verdicts on a schedule (``TrainClassifiers``)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from models.schemas import (
        RegisterClassifierInput,
        TrainClassifierInput,
        TrainedCandidate,
        TrainingResult,
        TrainingSweepInput,
        TrainingTargets,
        training_workflow_id,
    )

SCHEDULE_ID = "aegis-train-classifiers"


@workflow.defn(name="TrainClassifier")
class TrainClassifier:
    @workflow.run
    async def run(self, task: TrainClassifierInput) -> TrainingResult:
        candidate = await workflow.execute_activity(
            "train_classifier",
            task,
            result_type=TrainedCandidate,
            task_queue=task.training_task_queue,
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        if candidate.model_id is None:
            return TrainingResult(
                status="skipped", reason=candidate.reason or "", training_size=candidate.training_size
            )
        return await workflow.execute_activity(
            "register_classifier",
            RegisterClassifierInput(organization_id=task.organization_id, model_id=candidate.model_id),
            result_type=TrainingResult,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )


@workflow.defn(name="TrainClassifiers")
class TrainClassifiers:
    """The schedule's run: one ``TrainClassifier`` after the other (training
    is CPU work; one at a time leaves the worker's other slots free)."""

    @workflow.run
    async def run(self, task: TrainingSweepInput) -> int:
        found = await workflow.execute_activity(
            "classifier_training_targets",
            task,
            result_type=TrainingTargets,
            start_to_close_timeout=timedelta(minutes=5),
        )
        trained = 0
        for target in found.targets:
            try:
                await workflow.execute_child_workflow(
                    TrainClassifier.run,
                    TrainClassifierInput(
                        organization_id=target.organization_id,
                        domain=target.domain,
                        training_task_queue=task.training_task_queue,
                    ),
                    id=training_workflow_id(target.organization_id, target.domain, workflow.uuid4()),
                )
                trained += 1
            except ChildWorkflowError:
                # One organisation's failed run does not hold up the others'.
                workflow.logger.warning("training run failed for one organisation's domain")
        return trained
