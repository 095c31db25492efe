"""Fixtures: a real PostgreSQL and a real Temporal server, one of each per test run.

Set AEGIS_TEST_DATABASE_URL (a server where we may create databases) and/or
AEGIS_TEST_TEMPORAL_ADDRESS to use existing servers; otherwise the embedded
PostgreSQL and the Temporal dev server from the installed packages are started.
Every test gets its own organisation, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from api.deps import AppResources
from core import search_attributes as sa
from core.db import create_engine, create_session_factory
from core.embedded import EmbeddedPostgres, temporal_binary
from core.migrations import upgrade_database
from core.secrets import new_secret_key
from core.settings import Settings
from core.worker import build_workers
from tests.fake_llm import FakeLLM
from tests.helpers import LiveApi, OrgClient

ADMIN_TOKEN = "test-admin-token-with-enough-entropy"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this run."""
    name = f"aegis_test_{uuid.uuid4().hex[:12]}"
    external = os.environ.get("AEGIS_TEST_DATABASE_URL")
    if external:
        server = make_url(external).set(drivername="postgresql")
        admin_dsn = server.set(database="postgres").render_as_string(hide_password=False)

        async def admin(sql: str) -> None:
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
        url = server.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
        upgrade_database(url)
        yield url
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return

    with tempfile.TemporaryDirectory(prefix="aegis-pg-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pgdata", delete_on_stop=True)
        try:
            url = asyncio.run(postgres.ensure_database(name))
            upgrade_database(url)
            yield url
        finally:
            postgres.stop()


@pytest.fixture(scope="session")
async def temporal_client() -> AsyncIterator[Client]:
    external = os.environ.get("AEGIS_TEST_TEMPORAL_ADDRESS")
    if external:
        client = await Client.connect(external, data_converter=pydantic_data_converter)
        await _register_search_attributes(client)
        yield client
        return
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=sa.ALL,
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


async def _register_search_attributes(client: Client) -> None:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest

    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for k in sa.ALL
        if k.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )


@pytest.fixture(scope="session")
def settings(database_url: str, temporal_client: Client) -> Settings:
    return Settings(
        database_url=database_url,
        temporal_address=temporal_client.service_client.config.target_host,
        temporal_namespace=temporal_client.namespace,
        # A queue of our own: a shared external Temporal may run other workers.
        task_queue=f"aegis-test-{uuid.uuid4().hex[:8]}",
        judge_task_queue=f"aegis-test-judge-{uuid.uuid4().hex[:8]}",
        training_task_queue=f"aegis-test-training-{uuid.uuid4().hex[:8]}",
        secret_key=new_secret_key(),
        api_key_pepper="test-pepper-" + uuid.uuid4().hex,
        # The fake provider listens on 127.0.0.1.
        allow_private_urls=True,
        allow_signup=True,
        admin_token=ADMIN_TOKEN,
        temporal_rpc_timeout_seconds=2.0,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture(scope="session")
async def worker(
    temporal_client: Client, session_factory: async_sessionmaker[AsyncSession], settings: Settings
) -> AsyncIterator[list[Worker]]:
    """Real workers polling the run's task queues (evaluations and judge) for the whole session."""
    workers = build_workers(temporal_client, session_factory, settings)
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        yield workers


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    """A local server speaking the OpenAI and Anthropic wire formats; scripted per model name."""
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="session")
async def resources(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], temporal_client: Client
) -> AsyncIterator[AppResources]:
    resources = AppResources(settings, session_factory, temporal_client)
    yield resources
    await resources.dispatcher.aclose()


@pytest.fixture(scope="session")
def live_api(settings: Settings) -> Iterator[LiveApi]:
    """The API served over HTTP on loopback, for clients that need a real server."""
    server = LiveApi(settings)
    yield server
    server.stop()


@pytest.fixture
async def api(resources: AppResources) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(resources=resources)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
    ) as client:
        yield client


@pytest.fixture
async def org(api: httpx.AsyncClient) -> OrgClient:
    """A new organisation with its first API key."""
    return await OrgClient.create(api, f"org-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def other_org(api: httpx.AsyncClient) -> OrgClient:
    return await OrgClient.create(api, f"other-{uuid.uuid4().hex[:8]}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-histories",
        action="store_true",
        help="Record the workflow histories under tests/data/histories again (see tests/test_replay.py).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "record_histories: writes tests/data/histories; runs on request only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The recorder writes files: it is a tool, collected only when asked for.
    if config.getoption("--record-histories"):
        items[:] = [item for item in items if item.get_closest_marker("record_histories")]
        return
    kept = [item for item in items if not item.get_closest_marker("record_histories")]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item (``rep_call``): a fixture's
    teardown can then tell whether the test failed (and take a screenshot)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
