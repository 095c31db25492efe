"""Writing an evaluation's outcome to PostgreSQL, idempotently."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.traces import locked_trace
from core import metrics
from core.judges import add_usage
from core.packs import PackResolver
from domains import load_domain_pack
from evaluators.verdict import final_verdict
from models.schemas import FinalVerdict, PersistInput, StatusUpdateInput, TraceStatus
from models.tables import Alert, EvaluationIssue, EvaluationResult, ReviewRequest, Trace, VerdictChange

# The pack whose pass threshold and alert rules apply when the domain is unknown.
FALLBACK_PACK = "generic"


class PersistActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], packs: PackResolver) -> None:
        self._sessions = session_factory
        self._packs = packs

    @activity.defn(name="persist_evaluation")
    async def persist(self, task: PersistInput) -> FinalVerdict:
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
        verdict = FinalVerdict(passed=passed, severity=severity, decided_by=decided_by)
        now = dt.datetime.now(dt.UTC)
        tiers = [o.model_dump(mode="json", exclude={"findings"}) for o in task.outcomes]

        async with self._sessions() as session, session.begin():
            trace = await locked_trace(session, task.trace_id, task.organization_id)
            first_completion = (
                await session.scalar(
                    select(EvaluationResult.id).where(
                        EvaluationResult.trace_id == task.trace_id, EvaluationResult.version == task.version
                    )
                )
                is None
            )

            values = dict(
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
            )
            # Stored as not current, then marked by _mark_current: the unique index allows one.
            upsert = insert(EvaluationResult).values(**values, current=False)
            await session.execute(
                upsert.on_conflict_do_update(
                    index_elements=[EvaluationResult.trace_id, EvaluationResult.version],
                    set_={
                        k: upsert.excluded[k]
                        for k in values
                        if k not in ("organization_id", "trace_id", "version")
                    }
                    | {"updated_at": now},
                )
            )
            await _mark_current(session, task)
            await session.execute(
                delete(EvaluationIssue).where(
                    EvaluationIssue.trace_id == task.trace_id, EvaluationIssue.version == task.version
                )
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
                await session.execute(insert(EvaluationIssue).values(issues))
            if task.version >= trace.evaluation_version:
                # An older version finishing late does not end a newer one.
                status = TraceStatus.AWAITING_REVIEW if task.review else TraceStatus.COMPLETED
                await session.execute(
                    update(Trace)
                    .where(Trace.id == task.trace_id)
                    .values(status=status.value, evaluated_at=now)
                )
            if task.review is not None:
                await session.execute(
                    insert(ReviewRequest)
                    .values(
                        organization_id=task.organization_id,
                        trace_id=task.trace_id,
                        version=task.version,
                        domain=task.domain,
                        reason=task.review.reason,
                        severity=severity.value,
                        risk_level=task.review.risk_level,
                        status="pending",
                        deadline=task.review.deadline,
                    )
                    .on_conflict_do_nothing(index_elements=[ReviewRequest.trace_id, ReviewRequest.version])
                )
            if first_completion:
                session.add(
                    VerdictChange(
                        organization_id=task.organization_id,
                        trace_id=task.trace_id,
                        version=task.version,
                        to_passed=passed,
                        to_severity=severity.value,
                        to_decided_by=decided_by,
                        changed_by="aegis",
                        reason="automated",
                    )
                )
                await add_usage(session, task.organization_id, task.domain, decided_by, evaluations=1)
                if severity in pack.alerts.severities:
                    session.add(
                        Alert(
                            organization_id=task.organization_id,
                            trace_id=task.trace_id,
                            severity=severity.value,
                            kind="evaluation",
                            message=f"Trace evaluated {severity.value}, decided by {decided_by}",
                            details={"rule_ids": sorted({i["rule_id"] for i in issues})},
                        )
                    )
        if first_completion:
            # Counted after the commit, by the attempt that stored the result
            # first: a retry finds it stored and counts nothing. A worker lost
            # between the commit and here loses the count (the metric may
            # undercount, never overcount; usage_metrics is the exact record).
            metrics.evaluation_stored(passed=passed, decided_by=decided_by, domain=task.domain)
        return verdict

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


async def _mark_current(session: AsyncSession, task: PersistInput) -> None:
    """Make the highest stored version the trace's current result.

    Two statements, because the partial unique index on ``current`` is
    checked row by row: nothing may be marked twice, even briefly.
    """
    latest = await session.scalar(
        select(func.max(EvaluationResult.version)).where(EvaluationResult.trace_id == task.trace_id)
    )
    await session.execute(
        update(EvaluationResult)
        .where(EvaluationResult.trace_id == task.trace_id, EvaluationResult.version != latest)
        .values(current=False)
    )
    await session.execute(
        update(EvaluationResult)
        .where(EvaluationResult.trace_id == task.trace_id, EvaluationResult.version == latest)
        .values(current=True)
    )
