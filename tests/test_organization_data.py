"""Deleting data: one trace (with its workflow history), or a whole organisation after an export."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import BatchOperationState
from temporalio.api.workflowservice.v1 import DescribeBatchOperationRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.routes.organization_data import EXPORTED, exported_columns
from models.schemas import workflow_id_for
from models.tables import Base
from tests.helpers import OrgClient

SSN_TRACE = {
    "model": "gpt-4",
    "input": "My SSN is 123-45-6789, can you remember it?",
    "output": "I will not store your social security number.",
    "domain": "generic",
}


async def workflow_exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def eventually_gone(client: Client, workflow_ids: list[str], timeout: float = 90.0) -> None:
    """The server deletes a closed workflow's history asynchronously (about half a minute here)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = [wid for wid in workflow_ids if await workflow_exists(client, wid)]
        if not remaining:
            return
        assert time.monotonic() < deadline, f"workflows not deleted after {timeout}s: {remaining}"
        await asyncio.sleep(0.5)


async def batch_deleted(client: Client, job_id: str, expected: int, timeout: float = 30.0) -> None:
    """The batch job ran and the server took a deletion for each of the organisation's workflows."""
    deadline = time.monotonic() + timeout
    while True:
        job = await client.workflow_service.describe_batch_operation(
            DescribeBatchOperationRequest(namespace=client.namespace, job_id=job_id)
        )
        if job.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED:
            assert (job.total_operation_count, job.complete_operation_count) == (expected, expected)
            return
        assert job.state == BatchOperationState.BATCH_OPERATION_STATE_RUNNING, job
        assert time.monotonic() < deadline, f"batch deletion not done after {timeout}s"
        await asyncio.sleep(0.5)


async def rows_of(session_factory: async_sessionmaker[AsyncSession], organization_id: str) -> dict[str, int]:
    """Rows per table that carry the organisation's id (every table but deliveries)."""
    counts = {}
    async with session_factory() as session:
        for table in Base.metadata.sorted_tables:
            column = table.c.get("organization_id") if table.name != "organizations" else table.c.id
            if column is not None:
                counts[table.name] = await session.scalar(
                    select(func.count()).select_from(table).where(column == uuid.UUID(organization_id))
                )
    return counts


async def test_deleting_a_trace_deletes_its_workflow_history(
    org: OrgClient, worker: object, temporal_client: Client
) -> None:
    trace_id = await org.submit(**SSN_TRACE)
    await org.wait_for_evaluation(trace_id)
    workflow_id = workflow_id_for(uuid.UUID(trace_id))
    assert await workflow_exists(temporal_client, workflow_id)

    assert (await org.delete(f"/api/v1/traces/{trace_id}")).status_code == 204
    assert (await org.get(f"/api/v1/traces/{trace_id}")).status_code == 404
    await eventually_gone(temporal_client, [workflow_id])


async def test_an_organisation_exports_its_data_without_secrets_then_purges_it(
    org: OrgClient,
    other_org: OrgClient,
    worker: object,
    temporal_client: Client,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    trace_ids = [await org.submit(**SSN_TRACE, external_id=f"call-{n}") for n in range(3)]
    for trace_id in trace_ids:
        await org.wait_for_evaluation(trace_id)
    foreign = await other_org.submit(**SSN_TRACE)
    await other_org.wait_for_evaluation(foreign)
    assert (await org.post("/api/v1/api-keys", json={"name": "second"})).status_code == 201

    export = await org.get("/api/v1/organization/export")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in export.text.splitlines()]
    by_table: dict[str, list[dict]] = {}
    for record in records:
        by_table.setdefault(record["table"], []).append(record["row"])
    assert [row["id"] for row in by_table["organizations"]] == [org.organization_id]
    assert sorted(row["id"] for row in by_table["traces"]) == sorted(trace_ids)
    assert {row["input"] for row in by_table["traces"]} == {SSN_TRACE["input"]}
    assert {row["trace_id"] for row in by_table["evaluation_results"]} == set(trace_ids)
    assert len(by_table["api_keys"]) == 2
    # Only the organisation's rows, and no secret of any kind.
    assert foreign not in export.text
    assert all(
        row.get("organization_id", org.organization_id) == org.organization_id
        for row in map(lambda record: record["row"], records)
        if "organization_id" in row
    )
    assert org.api_key not in export.text
    assert "key_hash" not in export.text
    assert all("encrypted" not in column for rows in by_table.values() for row in rows for column in row)
    # Tables appear parents first, in the documented order.
    order = [model.__table__.name for model in EXPORTED]
    seen = [record["table"] for record in records]
    assert seen == sorted(seen, key=order.index)
    assert not {c.name for m in EXPORTED for c in exported_columns(m.__table__)} & {"key_hash"}

    wrong = await org.delete(f"/api/v1/organization?confirm={other_org.organization_id}")
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "confirmation_mismatch"
    missing = await org.delete("/api/v1/organization")
    assert missing.status_code == 422

    purged = await org.delete(f"/api/v1/organization?confirm={org.organization_id}")
    assert purged.status_code == 200, purged.text
    assert purged.json()["traces_deleted"] == 3
    assert purged.json()["workflow_deletion_job_id"]

    # Gone everywhere: every table, the keys, the workflow histories.
    assert set((await rows_of(session_factory, org.organization_id)).values()) == {0}
    assert (await org.get("/api/v1/traces")).status_code == 401
    await batch_deleted(temporal_client, purged.json()["workflow_deletion_job_id"], expected=3)
    # The other organisation keeps everything.
    assert (await other_org.get(f"/api/v1/traces/{foreign}")).status_code == 200
    assert await workflow_exists(temporal_client, workflow_id_for(uuid.UUID(foreign)))


async def test_export_and_purge_need_an_api_key(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/v1/organization/export")).status_code == 401
    assert (await api.delete(f"/api/v1/organization?confirm={uuid.uuid4()}")).status_code == 401
