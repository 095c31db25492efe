"""Breaking things on purpose: a worker killed mid-evaluation loses nothing
and duplicates nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError

from api.app import create_app
from api.deps import AppResources
from core.db import create_engine, create_session_factory
from core.settings import Settings
from core.worker import build_workers
from models.tables import EvaluationResult, Trace, UsageMetric, VerdictChange
from tests.helpers import OrgClient, with_own_queues
from workflows.dispatch_sweep import SCHEDULE_ID

ROOT = Path(__file__).resolve().parent.parent
TRACES = 150


def worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    """``aegis worker`` as production runs it, on this test's own task queues."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    env |= {
        "AEGIS_DATABASE_URL": settings.require_database_url(),
        "AEGIS_TEMPORAL_ADDRESS": settings.require_temporal_address(),
        "AEGIS_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "AEGIS_TASK_QUEUE": settings.task_queue,
        "AEGIS_JUDGE_TASK_QUEUE": settings.judge_task_queue,
        "AEGIS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def crash_settings(settings: Settings) -> Settings:
    return with_own_queues(settings, "crash")


async def stop_workers(
    processes: list[subprocess.Popen[bytes]], client: Client, schedule_existed: bool
) -> None:
    """SIGTERM the worker processes; remove the dispatch schedule they created, unless it was there before."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
    if not schedule_existed:
        with contextlib.suppress(RPCError):
            await client.get_schedule_handle(SCHEDULE_ID).delete()


async def stored_results(
    session_factory: async_sessionmaker[AsyncSession], organization_id: uuid.UUID
) -> tuple[int, int]:
    """(evaluation results, distinct traces with one) of an organisation."""
    async with session_factory() as session:
        results, distinct = (
            await session.execute(
                select(func.count(), func.count(func.distinct(EvaluationResult.trace_id))).where(
                    EvaluationResult.organization_id == organization_id
                )
            )
        ).one()
    return int(results), int(distinct)


async def submit_batch(org: OrgClient, count: int) -> list[str]:
    """``count`` small generic traces in one batch; their ids."""
    body = {
        "traces": [
            {"model": "m", "input": f"Question {n}?", "output": f"Answer {n}.", "domain": "generic"}
            for n in range(count)
        ]
    }
    response = await org.post("/api/v1/traces/batch", json=body)
    assert response.status_code == 202 and response.json()["accepted"] == count
    return [item["trace_id"] for item in response.json()["results"]]


async def schedule_exists(client: Client) -> bool:
    try:
        await client.get_schedule_handle(SCHEDULE_ID).describe()
    except RPCError:
        return False
    return True


async def test_a_worker_killed_mid_evaluation_loses_and_duplicates_nothing(
    crash_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> None:
    schedule_existed = await schedule_exists(temporal_client)
    app = create_app(resources=AppResources(crash_settings, session_factory, temporal_client))
    first = worker_process(crash_settings)
    second: subprocess.Popen[bytes] | None = None
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
        ) as api:
            org = await OrgClient.create(api, f"crash-{uuid.uuid4().hex[:6]}")
            await submit_batch(org, TRACES)
            organization_id = uuid.UUID(org.organization_id)

            # Let the worker get going, then kill it without warning.
            await _wait_for(
                lambda: _count_completed(session_factory, organization_id), at_least=1, timeout=60
            )
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            done_at_kill = await _count_completed(session_factory, organization_id)

            second = worker_process(crash_settings)
            # In-flight activities are retried once their 30 s timeout passes.
            await _wait_for(
                lambda: _count_completed(session_factory, organization_id), at_least=TRACES, timeout=150
            )
    finally:
        await stop_workers([p for p in (first, second) if p is not None], temporal_client, schedule_existed)

    assert done_at_kill < TRACES, "the kill came too late to interrupt anything"
    async with session_factory() as session:
        results = await session.scalar(
            select(func.count())
            .select_from(EvaluationResult)
            .where(EvaluationResult.organization_id == organization_id)
        )
        distinct = await session.scalar(
            select(func.count(func.distinct(EvaluationResult.trace_id))).where(
                EvaluationResult.organization_id == organization_id
            )
        )
        counted = await session.scalar(
            select(func.sum(UsageMetric.evaluations)).where(UsageMetric.organization_id == organization_id)
        )
        audits = await session.scalar(
            select(func.count())
            .select_from(VerdictChange)
            .where(VerdictChange.organization_id == organization_id)
        )
    assert (results, distinct, counted, audits) == (TRACES, TRACES, TRACES, TRACES)


async def test_two_worker_processes_share_the_work_without_duplicates(
    crash_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> None:
    """Horizontal scale: replicas of ``aegis worker`` on one queue split the
    evaluations between them, and each trace is evaluated exactly once."""
    schedule_existed = await schedule_exists(temporal_client)
    app = create_app(resources=AppResources(crash_settings, session_factory, temporal_client))
    replicas = [worker_process(crash_settings), worker_process(crash_settings)]
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
        ) as api:
            org = await OrgClient.create(api, f"scale-{uuid.uuid4().hex[:6]}")
            trace_ids = await submit_batch(org, TRACES)
            organization_id = uuid.UUID(org.organization_id)
            await _wait_for(
                lambda: _count_completed(session_factory, organization_id), at_least=TRACES, timeout=150
            )
    finally:
        await stop_workers(replicas, temporal_client, schedule_existed)

    assert await stored_results(session_factory, organization_id) == (TRACES, TRACES)
    # Who ran the activities: each replica's identity ("pid@host") shows in the histories.
    identities: set[str] = set()
    for trace_id in trace_ids[:: max(1, TRACES // 30)]:
        history = await temporal_client.get_workflow_handle(f"trace-{trace_id}").fetch_history()
        identities |= {
            event.activity_task_started_event_attributes.identity
            for event in history.events
            if event.HasField("activity_task_started_event_attributes")
        }
    pids = {identity.partition("@")[0] for identity in identities}
    assert pids == {str(process.pid) for process in replicas}, identities


async def _count_completed(
    session_factory: async_sessionmaker[AsyncSession], organization_id: uuid.UUID
) -> int:
    async with session_factory() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Trace)
                .where(Trace.organization_id == organization_id, Trace.status == "completed")
            )
            or 0
        )


async def _wait_for(count, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (value := await count()) < at_least:
        assert time.monotonic() < deadline, f"{value} of {at_least} after {timeout}s"
        await asyncio.sleep(0.05)


class PostgresProxy:
    """A TCP proxy in front of the test PostgreSQL that can be cut and restored,
    so an outage hits only the processes this test points at it."""

    def __init__(self, target: dict[str, str | int]) -> None:
        self._target = target
        self._up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = str(self._target["host"]), int(self._target["port"])
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            writer.close()
            return
        upstream_reader, upstream_writer = await self._connect()
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        self._up = False
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def restore(self) -> None:
        self._up = True

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def test_a_postgresql_outage_delays_evaluations_and_loses_nothing(
    settings: Settings, temporal_client: Client, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    real = make_url(settings.require_database_url())
    proxy = PostgresProxy(
        {"host": real.query.get("host") or real.host or "127.0.0.1", "port": real.port or 5432}
    )
    await proxy.start()
    proxied = with_own_queues(
        settings,
        "pgdown",
        database_url=real.set(host="127.0.0.1", port=proxy.port, query={}).render_as_string(
            hide_password=False
        ),
    )
    engine = create_engine(proxied)
    sessions = create_session_factory(engine)
    app = create_app(resources=AppResources(proxied, sessions, temporal_client))
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://aegis.test") as api,
            contextlib.AsyncExitStack() as running,
        ):
            org = await OrgClient.create(api, f"pgdown-{uuid.uuid4().hex[:6]}")
            organization_id = uuid.UUID(org.organization_id)
            body = {
                "traces": [
                    {"model": "m", "input": "q", "output": f"Answer {n}.", "domain": "generic"}
                    for n in range(20)
                ]
            }
            response = await org.post("/api/v1/traces/batch", json=body)
            trace_ids = [item["trace_id"] for item in response.json()["results"]]
            # PostgreSQL goes away before the worker has stored anything.
            proxy.cut()
            for worker in build_workers(temporal_client, sessions, proxied):
                await running.enter_async_context(worker)

            ready = await api.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["error"]["details"]["database"] != "ok"
            refused = await org.post(
                "/api/v1/traces", json={"model": "m", "input": "q", "output": "a", "domain": "generic"}
            )
            # Refused loudly (the client retries), never accepted and lost.
            assert refused.status_code == 503, refused.text
            assert (
                refused.headers["Retry-After"] and refused.json()["error"]["code"] == "database_unavailable"
            )
            await asyncio.sleep(3)  # the tier activities fail and back off meanwhile
            assert await _count_completed(session_factory, organization_id) == 0

            proxy.restore()
            # Ready again within moments (each check may take 2 s on a loaded machine).
            deadline = time.monotonic() + 15
            while (ready := await api.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                await asyncio.sleep(0.2)
            for trace_id in trace_ids:
                assert (await org.wait_for_evaluation(trace_id, timeout=90))["status"] == "completed"
        async with session_factory() as session:
            results = await session.scalar(
                select(func.count())
                .select_from(EvaluationResult)
                .where(EvaluationResult.organization_id == organization_id)
            )
            traces = await session.scalar(
                select(func.count()).select_from(Trace).where(Trace.organization_id == organization_id)
            )
        assert (results, traces) == (20, 20)
    finally:
        await engine.dispose()
        await proxy.stop()
