"""Writing an evaluation's outcome to PostgreSQL, idempotently."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import trace_not_found
from core.packs import PackResolver
from domains import load_domain_pack
from evaluators.verdict import final_verdict
from models.schemas import FinalVerdict, PersistInput, StatusUpdateInput, TraceStatus
from models.tables import Alert, EvaluationIssue, EvaluationResult, Trace, UsageMetric

# The pack whose pass threshold and alert rules apply when the domain is unknown.
FALLBACK_PACK = "generic"


class PersistActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], packs: PackResolver) -> None:
        self._sessions = session_factory
        self._packs = packs

    @activity.defn(name="persist_evaluation")
    async def persist(self, task: PersistInput) -> FinalVerdict:
        """Upsert the result, replace the issues, finish the trace — in one transaction.

        A retried attempt rewrites the same rows (no duplicates); counters and
        alerts are written only by the attempt that moves the trace to its
        final status, which the row lock makes exactly one.
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
            trace = await session.scalar(
                select(Trace)
                .where(Trace.id == task.trace_id, Trace.organization_id == task.organization_id)
                .with_for_update()
            )
            if trace is None:
                raise trace_not_found()
            first_completion = trace.status != TraceStatus.COMPLETED

            values = dict(
                organization_id=task.organization_id,
                trace_id=task.trace_id,
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
            upsert = insert(EvaluationResult).values(**values)
            await session.execute(
                upsert.on_conflict_do_update(
                    index_elements=[EvaluationResult.trace_id],
                    set_={k: upsert.excluded[k] for k in values if k not in ("organization_id", "trace_id")}
                    | {"updated_at": now},
                )
            )
            await session.execute(delete(EvaluationIssue).where(EvaluationIssue.trace_id == task.trace_id))
            issues = [
                dict(
                    organization_id=task.organization_id,
                    trace_id=task.trace_id,
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
            await session.execute(
                update(Trace)
                .where(Trace.id == task.trace_id)
                .values(status=TraceStatus.COMPLETED.value, evaluated_at=now)
            )
            if first_completion:
                await _count(session, task, "traces_evaluated", now.date())
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
        return verdict

    @activity.defn(name="mark_trace_failed")
    async def mark_failed(self, task: StatusUpdateInput) -> None:
        """The workflow gave up on a trace: make that visible instead of leaving it 'evaluating'."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Trace).where(Trace.id == task.trace_id).values(status=TraceStatus.FAILED.value)
            )

    def all(self) -> list[object]:
        return [self.persist, self.mark_failed]


async def _count(session: AsyncSession, task: PersistInput, metric: str, day: dt.date) -> None:
    statement = insert(UsageMetric).values(
        organization_id=task.organization_id, day=day, metric=metric, value=1
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[UsageMetric.organization_id, UsageMetric.day, UsageMetric.metric],
            set_={"value": UsageMetric.value + 1},
        )
    )
