"""The audit export: what a reviewer gets matches what PostgreSQL holds."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.tables import EvaluationResult, VerdictChange
from tests.helpers import OrgClient

pytestmark = pytest.mark.usefixtures("worker")


def window(hours: float = 1.0) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {
        "from": (now - dt.timedelta(hours=hours)).isoformat(),
        "to": (now + dt.timedelta(hours=hours)).isoformat(),
    }


async def test_export_holds_every_evaluation_with_its_overrides_in_both_formats(
    org: OrgClient, other_org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    leaked = await other_org.submit(output="Other organisation's answer.")
    overridden = await org.submit(output="The patient's SSN is 219-09-9999.")
    clean = await org.submit(output="4", external_id='=HYPERLINK("https://example.com")')
    for trace_id in (leaked, overridden, clean):
        await (other_org if trace_id == leaked else org).wait_for_evaluation(trace_id)
    label = await org.post(
        f"/api/v1/traces/{overridden}/labels", json={"verdict": "pass", "reviewer": "dr.audit"}
    )
    assert label.status_code == 200, label.text

    jsonl = await org.get("/api/v1/audit/export", params=window())
    assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    records = {record["trace_id"]: record for record in map(json.loads, jsonl.text.splitlines())}
    assert set(records) == {overridden, clean}  # not the other organisation's

    async with session_factory() as session:
        for trace_id, record in records.items():
            stored = await session.scalar(
                select(EvaluationResult).where(EvaluationResult.trace_id == uuid.UUID(trace_id))
            )
            assert stored is not None
            assert (record["passed"], record["severity"], record["decided_by"]) == (
                stored.passed,
                stored.severity,
                stored.decided_by,
            )
            assert (record["pack_name"], record["pack_version"], record["version"]) == (
                stored.pack_name,
                stored.pack_version,
                stored.version,
            )
            assert [t["name"] for t in record["tiers"]] == [t["name"] for t in stored.tiers]
            changes = list(
                await session.scalars(
                    select(VerdictChange)
                    .where(VerdictChange.trace_id == uuid.UUID(trace_id))
                    .order_by(VerdictChange.created_at)
                )
            )
            assert [c["changed_by"] for c in record["verdict_changes"]] == [c.changed_by for c in changes]

    automated, override = records[overridden]["verdict_changes"]
    assert (automated["reason"], automated["from"], automated["to"]["passed"]) == ("automated", None, False)
    assert override["changed_by"] == "dr.audit"
    assert (override["from"]["passed"], override["to"]["passed"], override["to"]["decided_by"]) == (
        False,
        True,
        "expert",
    )
    assert records[overridden]["decided_by"] == "expert"
    assert "219-09" not in jsonl.text  # ids, verdicts and versions, never trace text

    as_csv = await org.get("/api/v1/audit/export", params={**window(), "format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = {row["trace_id"]: row for row in csv.DictReader(io.StringIO(as_csv.text))}
    assert set(rows) == set(records)
    assert json.loads(rows[overridden]["verdict_changes"]) == records[overridden]["verdict_changes"]
    assert rows[clean]["passed"] == "True" and rows[clean]["decided_by"] == records[clean]["decided_by"]
    # A client's value that a spreadsheet would run as a formula is quoted in the CSV, not in JSON Lines.
    assert records[clean]["external_id"] == '=HYPERLINK("https://example.com")'
    assert rows[clean]["external_id"] == "'" + records[clean]["external_id"]


async def test_export_of_an_empty_range_and_bad_ranges(org: OrgClient) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    empty = {"from": later.isoformat(), "to": (later + dt.timedelta(hours=1)).isoformat()}
    assert (await org.get("/api/v1/audit/export", params=empty)).text == ""
    header_only = await org.get("/api/v1/audit/export", params={**empty, "format": "csv"})
    assert header_only.text.splitlines() == [header_only.text.splitlines()[0]]
    assert header_only.text.startswith("trace_id,external_id,version")

    backwards = {"from": empty["to"], "to": empty["from"]}
    naive = {"from": "2026-01-01T00:00:00", "to": "2026-02-01T00:00:00"}
    for params, code, field in (
        (backwards, "invalid_range", "query.to"),
        (naive, "invalid_range", "query.from"),
        ({"to": empty["to"]}, "validation_error", "query.from"),
        ({**empty, "format": "xml"}, "validation_error", "query.format"),
        ({**empty, "domain": "\x00"}, "validation_error", "query.domain"),
    ):
        response = await org.get("/api/v1/audit/export", params=params)
        body = response.json()["error"]
        assert (response.status_code, body["code"]) == (422, code), params
        assert field in [d["field"] for d in body["details"]], body
