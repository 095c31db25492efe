"""ApplyRetention: started daily by a Temporal schedule, deletes expired traces in batches."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.schemas import RetentionSweepInput, RetentionSweepResult

SCHEDULE_ID = "aegis-retention"
# Batches per run; a longer backlog goes on in a new run, so that no history grows without end.
BATCHES_PER_RUN = 500


@workflow.defn(name="ApplyRetention")
class ApplyRetention:
    @workflow.run
    async def run(self, task: RetentionSweepInput) -> int:
        total = 0
        for _ in range(BATCHES_PER_RUN):
            result = await workflow.execute_activity(
                "delete_expired_traces",
                task,
                result_type=RetentionSweepResult,
                start_to_close_timeout=timedelta(minutes=5),
            )
            total += result.deleted
            if not result.remaining:
                return total
        workflow.continue_as_new(task)
