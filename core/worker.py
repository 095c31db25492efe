"""The Temporal worker process: workflows, activities, the dispatch schedule, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.dispatch import DispatchActivities
from activities.judge import JudgeActivities
from activities.persist import PersistActivities
from activities.retention import RetentionActivities
from activities.review import ReviewActivities
from activities.tiers import TierActivities
from activities.training import TrainingActivities
from core import metrics
from core.db import WORKER_APPLICATION_NAME, autocommit_sessions, create_engine, create_session_factory
from core.gc_pauses import freeze_startup_objects
from core.packs import PackResolver
from core.sandbox import workflow_runner
from core.settings import Settings
from core.temporal import connect
from domains import available_domains, load_domain_pack
from models.schemas import DispatchSweepInput, RetentionSweepInput, TrainingSweepInput
from workflows.dispatch_sweep import SCHEDULE_ID, DispatchPendingTraces
from workflows.evaluate_trace import EvaluateTrace, EvaluateTraceV2
from workflows.retention import SCHEDULE_ID as RETENTION_SCHEDULE_ID
from workflows.retention import ApplyRetention
from workflows.train_classifier import SCHEDULE_ID as TRAINING_SCHEDULE_ID
from workflows.train_classifier import TrainClassifier, TrainClassifiers

log = logging.getLogger(__name__)


def build_workers(
    client: Client, session_factory: async_sessionmaker[AsyncSession], settings: Settings
) -> list[Worker]:
    """The workers of this process: the evaluations queue (workflows and the
    cheap tiers), the judge queue (Tier 3 only), the training queue (Tier 2
    models), or all three.

    The judge queue has its own concurrency and a server-side rate limit that
    holds across every worker polling it, so LLM capacity is scaled and
    limited apart from the rest.
    """
    # The resolver only reads, one statement at a time.
    packs = PackResolver(autocommit_sessions(session_factory))
    shutdown = timedelta(seconds=settings.worker_graceful_shutdown_seconds)
    workers = []
    if settings.worker_queues in ("all", "evaluations"):
        activities = [
            *TierActivities(session_factory, packs).all(),
            *PersistActivities(session_factory, packs).all(),
            *ReviewActivities(session_factory, packs).all(),
            *AlertActivities(session_factory, settings).all(),
            *TrainingActivities(session_factory, packs).bookkeeping(),
            DispatchActivities(session_factory, client, settings).dispatch_pending,
            RetentionActivities(session_factory).delete_expired,
        ]
        workers.append(
            Worker(
                client,
                task_queue=settings.task_queue,
                workflows=[
                    EvaluateTrace,
                    EvaluateTraceV2,
                    DispatchPendingTraces,
                    ApplyRetention,
                    TrainClassifier,
                    TrainClassifiers,
                ],
                workflow_runner=workflow_runner(client.data_converter),
                activities=activities,
                max_concurrent_activities=settings.worker_max_concurrent_activities,
                max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
                graceful_shutdown_timeout=shutdown,
            )
        )
    if settings.worker_queues in ("all", "judge"):
        workers.append(
            Worker(
                client,
                task_queue=settings.judge_task_queue,
                activities=JudgeActivities(session_factory, packs, settings).all(),
                max_concurrent_activities=settings.judge_max_concurrent_calls,
                max_task_queue_activities_per_second=settings.judge_max_calls_per_second,
                graceful_shutdown_timeout=shutdown,
            )
        )
    if settings.worker_queues in ("all", "training"):
        workers.append(
            Worker(
                client,
                task_queue=settings.training_task_queue,
                activities=TrainingActivities(session_factory, packs).training(),
                # One model at a time per process: training is CPU and memory.
                max_concurrent_activities=1,
                graceful_shutdown_timeout=shutdown,
            )
        )
    return workers


async def _ensure_schedule(
    client: Client, schedule_id: str, workflow: str, argument: BaseModel, spec: ScheduleSpec, task_queue: str
) -> None:
    """Create a schedule that starts ``workflow`` (once per namespace: an
    existing one is left as it is), skipping a run while the last one runs."""
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            schedule_id,
            Schedule(
                action=ScheduleActionStartWorkflow(workflow, argument, id=schedule_id, task_queue=task_queue),
                spec=spec,
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            ),
        )


async def ensure_dispatch_schedule(client: Client, settings: Settings) -> None:
    """The schedule that re-dispatches stranded traces."""
    every = timedelta(seconds=settings.dispatch_sweep_seconds)
    await _ensure_schedule(
        client,
        SCHEDULE_ID,
        "DispatchPendingTraces",
        DispatchSweepInput(),
        ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        settings.task_queue,
    )


async def ensure_training_schedule(client: Client, settings: Settings) -> None:
    """The schedule that retrains Tier 2 models."""
    await _ensure_schedule(
        client,
        TRAINING_SCHEDULE_ID,
        "TrainClassifiers",
        TrainingSweepInput(
            min_new_labels=settings.classifier_training_min_new_labels,
            training_task_queue=settings.training_task_queue,
        ),
        ScheduleSpec(cron_expressions=[settings.classifier_training_cron]),
        settings.task_queue,
    )


async def ensure_retention_schedule(client: Client, settings: Settings) -> None:
    """The schedule that deletes traces past their organisation's retention."""
    await _ensure_schedule(
        client,
        RETENTION_SCHEDULE_ID,
        "ApplyRetention",
        RetentionSweepInput(),
        ScheduleSpec(cron_expressions=[settings.retention_cron]),
        settings.task_queue,
    )


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then let in-flight tasks finish (graceful shutdown)."""
    engine = create_engine(settings, application_name=WORKER_APPLICATION_NAME)
    # One Temporal runtime for the process, created before the client. With
    # metrics on, the SDK serves its own on a loopback port that the
    # worker's endpoint passes on: one port to scrape per process.
    sdk_metrics_port = metrics.free_loopback_port() if settings.worker_metrics_port else None
    runtime = metrics.temporal_runtime(sdk_metrics_port)
    metrics_server = (
        metrics.start_worker_metrics_server(settings.worker_metrics_port, sdk_metrics_port)
        if settings.worker_metrics_port
        else None
    )
    client = await connect(settings, runtime=runtime)
    # Compile the shipped packs before polling: compiling one takes up to a
    # second of CPU, which on first use would block the event loop and every
    # evaluation in flight with it.
    for name in available_domains():
        load_domain_pack(name)
    workers = build_workers(client, create_session_factory(engine), settings)
    await ensure_dispatch_schedule(client, settings)
    await ensure_training_schedule(client, settings)
    await ensure_retention_schedule(client, settings)
    freeze_startup_objects()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
            log.info("worker polling task queue %s", worker.task_queue)
        await stop.wait()
        log.info("shutting down worker (waiting up to %ss)", settings.worker_graceful_shutdown_seconds)
    await engine.dispose()
    if metrics_server is not None:
        metrics_server.shutdown()
        metrics_server.server_close()
