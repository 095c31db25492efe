"""The ceiling: what Temporal alone allows for workflows of the pipeline's shape.

``NoopEvaluation`` runs a given sequence of activities that do nothing, each
on the task queue the pipeline used for that step (the evaluations queue or
the judge queue), with the same timeouts' kind (regular activities, one
attempt each). ``bench/pipeline.py`` reads the sequences from the pipeline's
own histories, so the ceiling run has the same number and kind of activities
per workflow, on the same server with the same worker settings.

Run as a worker process (``python -m bench.ceiling``) with the same
``AEGIS_*`` environment as ``aegis worker``.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from core.sandbox import workflow_runner
    from core.search_attributes import STATUS

WORKFLOW_NAME = "NoopEvaluation"


class NoopEvaluationInput(BaseModel):
    # The task queue of each activity, in order.
    steps: list[str]
    # Search-attribute updates after each activity (a diagnostic: what they cost).
    upserts_per_step: int = 0


@activity.defn(name="noop")
async def noop() -> None:
    return None


@workflow.defn(name=WORKFLOW_NAME)
class NoopEvaluation:
    @workflow.run
    async def run(self, task: NoopEvaluationInput) -> int:
        for number, queue in enumerate(task.steps):
            await workflow.execute_activity(
                "noop",
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
            for _ in range(task.upserts_per_step):
                workflow.upsert_search_attributes([STATUS.value_set(f"step-{number}")])
        return len(task.steps)


async def run_worker() -> None:
    from core.settings import get_settings
    from core.temporal import connect

    settings = get_settings()
    client = await connect(settings)
    workers = [
        Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[NoopEvaluation],
            workflow_runner=workflow_runner(client.data_converter),
            activities=[noop],
            max_concurrent_activities=settings.worker_max_concurrent_activities,
            max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        ),
        Worker(
            client,
            task_queue=settings.judge_task_queue,
            activities=[noop],
            max_concurrent_activities=settings.judge_max_concurrent_calls,
            max_task_queue_activities_per_second=settings.judge_max_calls_per_second,
        ),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with workers[0], workers[1]:
        await stop.wait()


if __name__ == "__main__":
    # The workflow must come from the importable module, not from __main__:
    # the sandbox passes modules through by name.
    from bench.ceiling import run_worker as run_importable_worker
    from core.priority import lower_priority
    from core.settings import get_settings

    # The pipeline's worker settings, its CPU priority included.
    lower_priority(get_settings().worker_niceness)
    asyncio.run(run_importable_worker())
