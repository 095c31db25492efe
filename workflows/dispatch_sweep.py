"""DispatchPendingTraces: started by a Temporal schedule, re-dispatches stranded traces.

A trace stored while Temporal was unreachable waits in ``pending_dispatch``.
Once Temporal is back the schedule fires again and this workflow starts the
evaluations, page by page.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.schemas import DispatchSweepInput, DispatchSweepResult

SCHEDULE_ID = "aegis-dispatch-sweep"


@workflow.defn(name="DispatchPendingTraces")
class DispatchPendingTraces:
    @workflow.run
    async def run(self, task: DispatchSweepInput) -> int:
        total = 0
        while True:
            result = await workflow.execute_activity(
                "dispatch_pending_traces",
                task,
                result_type=DispatchSweepResult,
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(minutes=1),
            )
            total += result.dispatched
            if not result.remaining or result.dispatched == 0:
                return total
