"""`aegis dev` waits for its worker: ``core.embedded.wait_for_worker`` against the real Temporal server."""

from __future__ import annotations

import time
import uuid

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from core.embedded import wait_for_worker
from core.sandbox import workflow_runner


@workflow.defn(name="NothingToDo")
class NothingToDo:
    @workflow.run
    async def run(self) -> None:
        return None


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


async def test_no_worker_on_the_queue_times_out(temporal_client: Client) -> None:
    queue = f"nobody-{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"no worker polled {queue}"):
        await wait_for_worker(address_of(temporal_client), temporal_client.namespace, queue, timeout=0.6)
    assert time.monotonic() - started >= 0.6


async def test_a_polling_worker_ends_the_wait(temporal_client: Client) -> None:
    queue = f"polled-{uuid.uuid4().hex}"
    # The workers' own sandbox runner, as everywhere: with the default one,
    # which imports this module again inside the sandbox, the test process
    # crashed (SIGSEGV in asyncpg) in a later test.
    runner = workflow_runner(temporal_client.data_converter)
    async with Worker(temporal_client, task_queue=queue, workflows=[NothingToDo], workflow_runner=runner):
        await wait_for_worker(address_of(temporal_client), temporal_client.namespace, queue, timeout=30)
