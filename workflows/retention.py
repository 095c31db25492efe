"""ApplyRetention: started daily by a Temporal schedule, deletes expired traces in batches."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.schemas import RetentionSweepInput, RetentionSweepResult

SCHEDULE_ID = "aegis-retention"


@workflow.defn(name="ApplyRetention")
class ApplyRetention:
    @workflow.run
    async def run(self, task: RetentionSweepInput) -> int:
        total = 0
        while True:
            result = await workflow.execute_activity(
                "delete_expired_traces",
                task,
                result_type=RetentionSweepResult,
                start_to_close_timeout=timedelta(minutes=5),
            )
            total += result.deleted
            if not result.remaining:
                return total
