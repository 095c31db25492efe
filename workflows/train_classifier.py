"""Train the Tier 2 model of one organisation's domain, then promote it or
keep it (on a schedule, or on demand from the API and ``aegis train``)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from models.schemas import RegisterClassifierInput, TrainClassifierInput, TrainedCandidate, TrainingResult


@workflow.defn(name="TrainClassifier")
class TrainClassifier:
    @workflow.run
    async def run(self, task: TrainClassifierInput) -> TrainingResult:
        candidate = await workflow.execute_activity(
            "train_classifier",
            task,
            result_type=TrainedCandidate,
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
