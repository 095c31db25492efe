"""The hourly rollups behind the analytics API, kept as verdicts change.

Each trace counts once, in the hour it was created, under the verdict of its
current evaluation, and so do that evaluation's issues. Whoever changes
which verdict is current calls ``move`` in the same transaction: minus
the old, plus the new. That is persist (a first or a newer evaluation) and
apply_expert_label (an override). A retried attempt changes nothing, so it
counts nothing.

``rebuild`` recomputes an organisation's rollups from the stored
evaluations: for data written around them (benchmarks) and as the
reference the tests compare the kept counters with.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, delete, text
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from models.tables import IssueRollup, VerdictRollup

VERDICTS = VerdictRollup.__table__
ISSUES = IssueRollup.__table__


@dataclass(frozen=True)
class CountedIssue:
    tier: int
    category: str
    severity: str
    rule_id: str


@dataclass(frozen=True)
class CountedEvaluation:
    """One trace's current evaluation, as the rollups see it."""

    trace_created_at: dt.datetime
    domain: str
    model: str
    passed: bool
    severity: str
    decided_by: str
    issues: tuple[CountedIssue, ...] = ()


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


async def move(
    session: AsyncSession,
    organization_id: uuid.UUID,
    before: CountedEvaluation | None,
    after: CountedEvaluation | None,
) -> None:
    """The trace's current evaluation changed from ``before`` to ``after``
    (None: none). One upsert per table, run for the net change of each row
    in key order: concurrent transactions lock the rows they share in the
    same order, so two moves cannot deadlock on them."""
    verdicts: Counter[tuple[Any, ...]] = Counter()
    issues: Counter[tuple[Any, ...]] = Counter()
    for evaluation, sign in ((before, -1), (after, 1)):
        if evaluation is None:
            continue
        key = (organization_id, hour_of(evaluation.trace_created_at), evaluation.domain, evaluation.model)
        verdicts[(*key, evaluation.decided_by, evaluation.severity, evaluation.passed)] += sign
        for issue in evaluation.issues:
            issues[(*key, issue.tier, issue.category, issue.severity, issue.rule_id)] += sign
    await _add(session, _ADD_VERDICTS, VERDICTS, "evaluations", verdicts)
    await _add(session, _ADD_ISSUES, ISSUES, "issues", issues)


def _upsert_adding(table: Table, counter: str) -> Insert:
    """Insert a row, or add its counter to the row with its primary key."""
    statement = insert(table)
    return statement.on_conflict_do_update(
        constraint=table.primary_key, set_={counter: table.c[counter] + statement.excluded[counter]}
    )


# Built once, executed with parameters (see core.db on prepared statements).
_ADD_VERDICTS = _upsert_adding(VERDICTS, "evaluations")
_ADD_ISSUES = _upsert_adding(ISSUES, "issues")


async def _add(
    session: AsyncSession, upsert: Insert, table: Table, counter: str, deltas: Counter[tuple[Any, ...]]
) -> None:
    """Add each non-zero delta to the row of its primary key, in key order."""
    changed = sorted((key, delta) for key, delta in deltas.items() if delta)
    if not changed:
        return
    names = [column.name for column in table.primary_key.columns]
    await session.execute(
        upsert, [dict(zip(names, key, strict=True), **{counter: delta}) for key, delta in changed]
    )


_HOUR = "date_trunc('hour', t.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
REBUILD_VERDICTS = text(f"""
INSERT INTO verdict_rollups (organization_id, hour, domain, model, decided_by, severity, passed, evaluations)
SELECT r.organization_id, {_HOUR}, r.domain, t.model, r.decided_by, r.severity, r.passed, count(*)
FROM evaluation_results AS r JOIN traces AS t ON t.id = r.trace_id
WHERE r.current AND r.organization_id = :organization_id
GROUP BY 1, 2, 3, 4, 5, 6, 7
""")
REBUILD_ISSUES = text(f"""
INSERT INTO issue_rollups (organization_id, hour, domain, model, tier, category, severity, rule_id, issues)
SELECT r.organization_id, {_HOUR}, r.domain, t.model, i.tier, i.category, i.severity, i.rule_id, count(*)
FROM evaluation_results AS r
JOIN traces AS t ON t.id = r.trace_id
JOIN evaluation_issues AS i ON i.trace_id = r.trace_id AND i.version = r.version
WHERE r.current AND r.organization_id = :organization_id
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
""")


async def rebuild(session: AsyncSession | AsyncConnection, organization_id: uuid.UUID) -> None:
    """Recompute the organisation's rollups from its stored evaluations
    (counts of deleted traces are lost)."""
    for table in (VERDICTS, ISSUES):
        await session.execute(delete(table).where(table.c.organization_id == organization_id))
    for statement in (REBUILD_VERDICTS, REBUILD_ISSUES):
        await session.execute(statement, {"organization_id": organization_id})


def issues_of(rows: Iterable[tuple[int, str, str, str]]) -> tuple[CountedIssue, ...]:
    return tuple(CountedIssue(*row) for row in rows)
