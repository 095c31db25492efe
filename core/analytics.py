"""The hourly rollups behind the analytics API, kept as verdicts change.

Each trace counts once, in the hour it was created, under the verdict of its
current evaluation, and so do that evaluation's issues. Whoever changes
which verdict is current calls ``count`` in the same transaction: minus
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

from sqlalchemy import delete, text
from sqlalchemy.dialects.postgresql import insert
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


async def count(
    session: AsyncSession, organization_id: uuid.UUID, evaluation: CountedEvaluation, sign: int
) -> None:
    """Add (``sign=1``) or take away (``-1``) one evaluation and its issues."""
    key = dict(
        organization_id=organization_id,
        hour=hour_of(evaluation.trace_created_at),
        domain=evaluation.domain,
        model=evaluation.model,
    )
    verdict = insert(VERDICTS).values(
        **key,
        decided_by=evaluation.decided_by,
        severity=evaluation.severity,
        passed=evaluation.passed,
        evaluations=sign,
    )
    await session.execute(
        verdict.on_conflict_do_update(
            constraint=VERDICTS.primary_key,
            set_={"evaluations": VERDICTS.c.evaluations + verdict.excluded.evaluations},
        )
    )
    if not evaluation.issues:
        return
    # One row per key (a statement may not touch a row twice), in key order
    # so that concurrent writers lock rows in the same order.
    per_key = Counter(evaluation.issues)
    ordered = sorted(per_key, key=lambda i: (i.tier, i.category, i.severity, i.rule_id))
    issues = insert(ISSUES).values(
        [
            dict(
                **key,
                tier=i.tier,
                category=i.category,
                severity=i.severity,
                rule_id=i.rule_id,
                issues=sign * per_key[i],
            )
            for i in ordered
        ]
    )
    await session.execute(
        issues.on_conflict_do_update(
            constraint=ISSUES.primary_key,
            set_={"issues": ISSUES.c.issues + issues.excluded.issues},
        )
    )


async def move(
    session: AsyncSession,
    organization_id: uuid.UUID,
    before: CountedEvaluation | None,
    after: CountedEvaluation | None,
) -> None:
    """The trace's current evaluation changed from ``before`` to ``after``."""
    if before == after:
        return
    if before is not None:
        await count(session, organization_id, before, -1)
    if after is not None:
        await count(session, organization_id, after, 1)


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
