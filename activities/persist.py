"""Writing an evaluation's outcome to PostgreSQL, idempotently."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import NamedTuple

from sqlalchemy import bindparam, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import trace_not_found
from core import analytics, events, metrics
from core.judges import add_usage
from core.packs import PackResolver
from domains import load_domain_pack
from evaluators.verdict import final_verdict
from models.schemas import PersistInput, StatusUpdateInput, StoredVerdict, TraceStatus
from models.tables import Alert, EvaluationIssue, EvaluationResult, ReviewRequest, Trace, VerdictChange

TRACES = Trace.__table__
RESULTS = EvaluationResult.__table__
ISSUES = EvaluationIssue.__table__
ALERTS = Alert.__table__
REVIEWS = ReviewRequest.__table__
VERDICT_CHANGES = VerdictChange.__table__

# The statements of every evaluation, built once and executed with
# parameters (see core.db on prepared statements). Bound parameter names
# differ from column names: an UPDATE reserves those for its SET clause.
_LOCK_TRACE = (
    select(TRACES.c.evaluation_version, TRACES.c.model, TRACES.c.created_at)
    .where(TRACES.c.id == bindparam("trace"), TRACES.c.organization_id == bindparam("organization"))
    .with_for_update()
)
# Read with the trace's lock held: its newest stored version, and whether
# alerts wait for delivery (raised by earlier work on the trace; whoever
# raises one for it holds this lock, or ran before this activity).
_NEWEST_VERSION_AND_ALERTS = select(
    select(func.max(RESULTS.c.version)).where(RESULTS.c.trace_id == bindparam("trace")).scalar_subquery(),
    exists().where(
        ALERTS.c.trace_id == bindparam("trace"),
        ALERTS.c.organization_id == bindparam("organization"),
        ALERTS.c.delivery_status == "pending",
    ),
)
# What a newer result or a retry rewrites; the rest (the ids) stays.
_RESULT_UPDATED = (
    "domain",
    "passed",
    "severity",
    "decided_by",
    "tiers",
    "workflow_id",
    "run_id",
    "pack_name",
    "pack_version",
    "current",
)
_result_insert = insert(RESULTS)
_UPSERT_RESULT = _result_insert.on_conflict_do_update(
    index_elements=[RESULTS.c.trace_id, RESULTS.c.version],
    set_={name: _result_insert.excluded[name] for name in _RESULT_UPDATED} | {"updated_at": func.now()},
)
_INSERT_ISSUE = insert(ISSUES)
_FINISH_TRACE = (
    update(TRACES)
    .where(TRACES.c.id == bindparam("trace"))
    .values(status=bindparam("new_status"), evaluated_at=bindparam("finished_at"))
)
_REQUEST_REVIEW = insert(REVIEWS).on_conflict_do_nothing(
    index_elements=[REVIEWS.c.trace_id, REVIEWS.c.version]
)
_INSERT_VERDICT_CHANGE = insert(VERDICT_CHANGES)
_RAISE_ALERT = insert(ALERTS).returning(ALERTS.c.id)

# The pack whose pass threshold and alert rules apply when the domain is unknown.
FALLBACK_PACK = "generic"


class PersistActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], packs: PackResolver) -> None:
        self._sessions = session_factory
        self._packs = packs

    @activity.defn(name="persist_evaluation")
    async def persist(self, task: PersistInput) -> StoredVerdict:
        """Upsert the result of this evaluation version, replace its issues,
        finish the trace — in one transaction.

        A retried attempt rewrites the same rows (no duplicates); counters and
        alerts are written only by the attempt that first stores this
        version's result, which the row lock on the trace makes exactly one.
        The latest stored version is the trace's current result.
        """
        pack = (
            await self._packs.get(task.organization_id, task.pack)
            if task.pack
            else load_domain_pack(FALLBACK_PACK)
        )
        passed, severity, decided_by = final_verdict(task.outcomes, pack.pass_threshold)
        now = dt.datetime.now(dt.UTC)
        tiers = [o.model_dump(mode="json", exclude={"findings"}) for o in task.outcomes]

        async with self._sessions() as session, session.begin():
            trace = await _lock_trace(session, task)
            wanted, newest, alerts_pending = trace.wanted, trace.newest, trace.alerts_pending
            # The latest stored version is the trace's current result.
            current = newest is None or task.version >= newest
            if newest is None or task.version > newest:
                first_completion = True
            elif task.version == newest:
                first_completion = False
            else:  # an older version finishing after a newer one: rare
                first_completion = (
                    await session.scalar(
                        select(RESULTS.c.id).where(
                            RESULTS.c.trace_id == task.trace_id, RESULTS.c.version == task.version
                        )
                    )
                    is None
                )
            # What the rollups count for the trace now, when this result
            # replaces or rewrites it (a re-evaluation, a retry).
            before = (
                await _counted_current(session, task.trace_id, trace)
                if current and newest is not None
                else None
            )
            if current and newest is not None and newest != task.version:
                # Unmarked first: the partial unique index allows one current row.
                await session.execute(
                    update(RESULTS)
                    .where(RESULTS.c.trace_id == task.trace_id, RESULTS.c.current)
                    .values(current=False)
                )

            await session.execute(
                _UPSERT_RESULT,
                dict(
                    organization_id=task.organization_id,
                    trace_id=task.trace_id,
                    version=task.version,
                    domain=task.domain,
                    passed=passed,
                    severity=severity.value,
                    decided_by=decided_by,
                    tiers=tiers,
                    workflow_id=task.workflow_id,
                    run_id=task.run_id,
                    pack_name=task.pack.name if task.pack else None,
                    pack_version=task.pack.version if task.pack else None,
                    current=current,
                ),
            )
            if not first_completion:
                # A retry, or a version stored before: its issues are replaced.
                await session.execute(
                    delete(ISSUES).where(ISSUES.c.trace_id == task.trace_id, ISSUES.c.version == task.version)
                )
            issues = [
                dict(
                    organization_id=task.organization_id,
                    trace_id=task.trace_id,
                    version=task.version,
                    tier=outcome.tier,
                    ordinal=ordinal,
                    rule_id=f.rule_id,
                    category=f.category,
                    severity=f.severity.value,
                    message=f.message,
                    spans=[s.model_dump(mode="json") for s in f.spans],
                )
                for outcome in task.outcomes
                for ordinal, f in enumerate(outcome.findings)
            ]
            if issues:
                await session.execute(_INSERT_ISSUE, issues)
            if task.version >= wanted:
                # An older version finishing late does not end a newer one.
                status = TraceStatus.AWAITING_REVIEW if task.review else TraceStatus.COMPLETED
                await session.execute(
                    _FINISH_TRACE, {"trace": task.trace_id, "new_status": status.value, "finished_at": now}
                )
            if task.review is not None:
                await session.execute(
                    _REQUEST_REVIEW,
                    dict(
                        organization_id=task.organization_id,
                        trace_id=task.trace_id,
                        version=task.version,
                        domain=task.domain,
                        reason=task.review.reason,
                        severity=severity.value,
                        risk_level=task.review.risk_level,
                        status="pending",
                        deadline=task.review.deadline,
                    ),
                )
            happened = []
            if first_completion:
                happened.append(
                    events.NewEvent(
                        events.EVALUATION_COMPLETED,
                        task.trace_id,
                        {
                            "version": task.version,
                            "current": current,
                            "passed": passed,
                            "severity": severity.value,
                            "decided_by": decided_by,
                        },
                    )
                )
                if task.review is not None:
                    happened.append(
                        events.NewEvent(
                            events.REVIEW_REQUESTED,
                            task.trace_id,
                            {
                                "version": task.version,
                                "reason": task.review.reason,
                                "risk_level": task.review.risk_level,
                                "deadline": task.review.deadline.isoformat(),
                            },
                        )
                    )
                await session.execute(
                    _INSERT_VERDICT_CHANGE,
                    dict(
                        organization_id=task.organization_id,
                        trace_id=task.trace_id,
                        version=task.version,
                        to_passed=passed,
                        to_severity=severity.value,
                        to_decided_by=decided_by,
                        changed_by="aegis",
                        reason="automated",
                    ),
                )
                if severity in pack.alerts.severities:
                    alerts_pending = True
                    alert_id = await session.scalar(
                        _RAISE_ALERT,
                        dict(
                            organization_id=task.organization_id,
                            trace_id=task.trace_id,
                            severity=severity.value,
                            kind="evaluation",
                            message=f"Trace evaluated {severity.value}, decided by {decided_by}",
                            details={"rule_ids": sorted({i["rule_id"] for i in issues})},
                        ),
                    )
                    happened.append(
                        events.NewEvent(
                            events.ALERT_RAISED,
                            task.trace_id,
                            {"alert_id": str(alert_id), "severity": severity.value, "kind": "evaluation"},
                        )
                    )
            # The counters other transactions share come last, so their rows
            # are locked only until the commit right after.
            if current:
                after = analytics.CountedEvaluation(
                    trace_created_at=trace.created_at,
                    domain=task.domain,
                    model=trace.model,
                    passed=passed,
                    severity=severity.value,
                    decided_by=decided_by,
                    issues=analytics.issues_of(
                        (i["tier"], i["category"], i["severity"], i["rule_id"]) for i in issues
                    ),
                )
                await analytics.move(session, task.organization_id, before, after)
            if first_completion:
                await add_usage(session, task.organization_id, task.domain, decided_by, evaluations=1)
            await events.publish(session, task.organization_id, happened)
        if first_completion:
            # Counted after the commit, by the attempt that stored the result
            # first: a retry finds it stored and counts nothing. A worker lost
            # between the commit and here loses the count (the metric may
            # undercount, never overcount; usage_metrics is the exact record).
            metrics.evaluation_stored(passed=passed, decided_by=decided_by, domain=task.domain)
        return StoredVerdict(
            passed=passed, severity=severity, decided_by=decided_by, alerts_pending=alerts_pending
        )

    @activity.defn(name="mark_trace_failed")
    async def mark_failed(self, task: StatusUpdateInput) -> None:
        """The workflow gave up on a trace: make that visible instead of leaving it 'evaluating'."""
        async with self._sessions() as session, session.begin():
            # Only a trace not yet failed changes, so a retried attempt is not counted twice.
            domain = await session.scalar(
                update(Trace)
                .where(Trace.id == task.trace_id, Trace.status != TraceStatus.FAILED.value)
                .values(status=TraceStatus.FAILED.value)
                .returning(Trace.domain)
            )
        if domain is not None:
            metrics.evaluation_gave_up(domain=domain)

    def all(self) -> list[object]:
        return [self.persist, self.mark_failed]


class LockedTrace(NamedTuple):
    wanted: int  # the evaluation version the trace wants
    model: str
    created_at: dt.datetime
    newest: int | None  # the newest version stored for it
    alerts_pending: bool  # alerts raised for it wait for delivery


async def _lock_trace(session: AsyncSession, task: PersistInput) -> LockedTrace:
    """Lock the organisation's trace for this transaction (activities that
    write a trace's outcome take turns) and read what persist needs of it.
    Raises ``trace_not_found``.

    Two statements: a statement that waits for the lock still reads what it
    reads from the snapshot it began with, so the newest version (and the
    pending alerts) must be read after the lock is held, or an attempt that
    waited for another to commit would not see that attempt's result.
    """
    trace = (
        await session.execute(_LOCK_TRACE, {"trace": task.trace_id, "organization": task.organization_id})
    ).one_or_none()
    if trace is None:
        raise trace_not_found()
    newest, alerts_pending = (
        await session.execute(
            _NEWEST_VERSION_AND_ALERTS, {"trace": task.trace_id, "organization": task.organization_id}
        )
    ).one()
    return LockedTrace(trace.evaluation_version, trace.model, trace.created_at, newest, alerts_pending)


async def _counted_current(
    session: AsyncSession, trace_id: uuid.UUID, trace: LockedTrace
) -> analytics.CountedEvaluation | None:
    """The trace's current result as the rollups count it (None: none yet)."""
    result = (
        await session.execute(
            select(
                RESULTS.c.version,
                RESULTS.c.domain,
                RESULTS.c.passed,
                RESULTS.c.severity,
                RESULTS.c.decided_by,
            ).where(RESULTS.c.trace_id == trace_id, RESULTS.c.current)
        )
    ).one_or_none()
    if result is None:
        return None
    issues = await session.execute(
        select(ISSUES.c.tier, ISSUES.c.category, ISSUES.c.severity, ISSUES.c.rule_id).where(
            ISSUES.c.trace_id == trace_id, ISSUES.c.version == result.version
        )
    )
    return analytics.CountedEvaluation(
        trace_created_at=trace.created_at,
        domain=result.domain,
        model=trace.model,
        passed=result.passed,
        severity=result.severity,
        decided_by=result.decided_by,
        issues=analytics.issues_of(tuple(row) for row in issues),
    )
