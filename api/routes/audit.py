"""The audit export: every evaluation in a time range, with the evidence a
reviewer asks for (HIPAA, FDA and the like).

One record per evaluation version stored in ``[from, to)``: the trace's
ids and model, each tier's verdict, the final verdict and who decided it,
every change of that verdict (the automated one, then each expert
override: who, when, from, to, why), and the versions that decided (the
domain pack, the Tier 2 model, the judge's provider and model). JSON Lines
or CSV (nested values as JSON in their cells), streamed from PostgreSQL in
batches, so a year of evaluations is no harder than a day. No trace text.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic_core import to_jsonable_python
from sqlalchemy import select, tuple_

from api.deps import CurrentCaller, Resources
from api.errors import AUTHENTICATED_ERRORS, invalid_range
from models.tables import EvaluationResult, Trace, VerdictChange

router = APIRouter(tags=["audit"], responses=AUTHENTICATED_ERRORS)

_BATCH_ROWS = 500
CSV_COLUMNS = (
    "trace_id",
    "external_id",
    "version",
    "domain",
    "model",
    "trace_created_at",
    "evaluated_at",
    "passed",
    "severity",
    "decided_by",
    "pack_name",
    "pack_version",
    "classifier_model_version",
    "judge_provider",
    "judge_model",
    "tiers",
    "verdict_changes",
    "workflow_id",
)
# What each tier's verdict keeps: no free text, no scores beyond the decision.
TIER_FIELDS = ("tier", "name", "status", "severity", "passed", "settled")


def _tier_verdicts(tiers: Sequence[Any]) -> list[dict[str, Any]]:
    return [{key: tier.get(key) for key in TIER_FIELDS} for tier in tiers if isinstance(tier, dict)]


def _tier_detail(tiers: Sequence[Any], number: int, key: str) -> Any:
    for tier in tiers:
        if isinstance(tier, dict) and tier.get("tier") == number:
            return (tier.get("detail") or {}).get(key)
    return None


def _change(row: VerdictChange) -> dict[str, Any]:
    return {
        "at": row.created_at,
        "changed_by": row.changed_by,
        "reason": row.reason,
        "from": None
        if row.from_passed is None
        else {"passed": row.from_passed, "severity": row.from_severity, "decided_by": row.from_decided_by},
        "to": {"passed": row.to_passed, "severity": row.to_severity, "decided_by": row.to_decided_by},
        "label_id": row.label_id,
    }


def _record(result: EvaluationResult, trace: Trace, changes: list[dict[str, Any]]) -> dict[str, Any]:
    tiers = result.tiers or []
    return to_jsonable_python(
        {
            "trace_id": result.trace_id,
            "external_id": trace.external_id,
            "version": result.version,
            "domain": result.domain,
            "model": trace.model,
            "trace_created_at": trace.created_at,
            "evaluated_at": result.created_at,
            "passed": result.passed,
            "severity": result.severity,
            "decided_by": result.decided_by,
            "pack_name": result.pack_name,
            "pack_version": result.pack_version,
            "classifier_model_version": _tier_detail(tiers, 2, "model_version"),
            "judge_provider": _tier_detail(tiers, 3, "provider"),
            "judge_model": _tier_detail(tiers, 3, "model"),
            "tiers": _tier_verdicts(tiers),
            "verdict_changes": changes,
            "workflow_id": result.workflow_id,
        }
    )


# A cell a spreadsheet would run as a formula. Client-chosen values (external
# ids, model names) reach the export, so such a cell is prefixed with a quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_line(record: dict[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_cell(record[column]) for column in CSV_COLUMNS])
    return buffer.getvalue()


async def _records(
    resources: Resources, organization_id: uuid.UUID, start: dt.datetime, end: dt.datetime, domain: str | None
) -> AsyncIterator[list[dict[str, Any]]]:
    """Batches of records, oldest evaluation first."""
    query = (
        select(EvaluationResult, Trace)
        .join(Trace, Trace.id == EvaluationResult.trace_id)
        .where(
            EvaluationResult.organization_id == organization_id,
            EvaluationResult.created_at >= start,
            EvaluationResult.created_at < end,
        )
        .order_by(EvaluationResult.created_at, EvaluationResult.trace_id, EvaluationResult.version)
        .execution_options(yield_per=_BATCH_ROWS)
    )
    if domain:
        query = query.where(EvaluationResult.domain == domain)
    # Its own session: the request's closes before a streamed body is sent.
    async with resources.session_factory() as session, resources.session_factory() as changes_session:
        result = await session.stream(query)
        async for batch in result.partitions():
            keys = [(evaluation.trace_id, evaluation.version) for evaluation, _ in batch]
            changes: dict[tuple[uuid.UUID, int], list[dict[str, Any]]] = {}
            for change in await changes_session.scalars(
                select(VerdictChange)
                .where(
                    VerdictChange.organization_id == organization_id,
                    tuple_(VerdictChange.trace_id, VerdictChange.version).in_(keys),
                )
                .order_by(VerdictChange.created_at, VerdictChange.id)
            ):
                changes.setdefault((change.trace_id, change.version), []).append(_change(change))
            yield [
                _record(evaluation, trace, changes.get((evaluation.trace_id, evaluation.version), []))
                for evaluation, trace in batch
            ]


async def _jsonl(batches: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        yield "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in batch).encode()


async def _csv(batches: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    header = io.StringIO()
    csv.writer(header).writerow(CSV_COLUMNS)
    yield header.getvalue().encode()
    async for batch in batches:
        yield "".join(_csv_line(record) for record in batch).encode()


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "One evaluation version per line",
        }
    },
)
async def export_audit(
    caller: CurrentCaller,
    resources: Resources,
    start: Annotated[
        dt.datetime, Query(alias="from", description="Evaluations stored at or after this time.")
    ],
    end: Annotated[dt.datetime, Query(alias="to", description="... and before this time.")],
    format: Literal["jsonl", "csv"] = "jsonl",
    # Checked here, not by the database: once the stream has begun, an error
    # can no longer become a 422.
    domain: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$")] = None,
) -> StreamingResponse:
    """Evaluations stored in ``[from, to)`` with tier verdicts, the final verdict, who decided,
    every override and the pack and model versions, as JSON Lines or CSV."""
    if start.tzinfo is None or end.tzinfo is None:
        invalid_range(
            "from" if start.tzinfo is None else "to", "needs a time zone, e.g. 2026-01-01T00:00:00Z"
        )
    if start >= end:
        invalid_range("to", "must be after from")
    batches = _records(resources, caller.organization_id, start, end, domain)
    stamp = f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"
    media, body = (
        ("text/csv", _csv(batches)) if format == "csv" else ("application/x-ndjson", _jsonl(batches))
    )
    return StreamingResponse(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="aegis-audit-{stamp}.{format}"'},
    )
