"""Activities that run the evaluation tiers on a stored trace."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import trace_not_found
from domains import load_domain_pack
from evaluators.escalation import CLASSIFIER, EXPERT, JUDGE, RULES, SANITISE, rules_settle
from evaluators.rules import evaluate_rules
from evaluators.sanitize import sanitise
from evaluators.types import Severity
from models.schemas import TierInput, TierOutcome, TraceStatus
from models.tables import Trace


class TierActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory

    async def _load(self, trace_id: uuid.UUID, organization_id: uuid.UUID, *, mark_evaluating: bool) -> Trace:
        async with self._sessions() as session:
            trace = await session.scalar(
                select(Trace).where(Trace.id == trace_id, Trace.organization_id == organization_id)
            )
            if trace is None:
                raise trace_not_found()
            if mark_evaluating and trace.status in (TraceStatus.PENDING_DISPATCH, TraceStatus.QUEUED):
                await session.execute(
                    update(Trace).where(Trace.id == trace_id).values(status=TraceStatus.EVALUATING.value)
                )
                await session.commit()
            return trace

    @activity.defn(name="tier0_sanitise")
    async def sanitise(self, task: TierInput) -> TierOutcome:
        """Tier 0: normalise and validate; count the PII that later tiers must not see."""
        trace = await self._load(task.trace_id, task.organization_id, mark_evaluating=True)
        started = time.perf_counter()
        _, result = sanitise(trace.input, trace.output, trace.metadata_)
        return TierOutcome(
            tier=0,
            name=SANITISE,
            status="completed",
            severity=Severity.max_of(f.severity for f in result.findings),
            findings=result.findings,
            detail={"valid": result.valid, "pii_counts": result.pii_counts},
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    @activity.defn(name="tier1_rules")
    async def rules(self, task: TierInput) -> TierOutcome:
        """Tier 1: the domain pack's deterministic rules."""
        trace = await self._load(task.trace_id, task.organization_id, mark_evaluating=False)
        started = time.perf_counter()
        pack = load_domain_pack(task.domain)
        normalised, _ = sanitise(trace.input, trace.output, trace.metadata_)
        result = evaluate_rules(normalised, pack)
        return TierOutcome(
            tier=1,
            name=RULES,
            status="completed",
            severity=result.max_severity,
            settled=rules_settle(result.max_severity),
            findings=result.findings,
            detail={"rules_evaluated": result.rules_evaluated, "pack": pack.name},
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    # Tiers 2-4 are steps of the same kind that report "not configured" until
    # a classifier model, a judge provider and a review policy exist.

    @activity.defn(name="tier2_classifier")
    async def classifier(self, task: TierInput) -> TierOutcome:
        return TierOutcome(
            tier=2, name=CLASSIFIER, status="not_configured", detail={"reason": "no model trained"}
        )

    @activity.defn(name="tier3_judge")
    async def judge(self, task: TierInput) -> TierOutcome:
        return TierOutcome(
            tier=3, name=JUDGE, status="not_configured", detail={"reason": "no judge provider"}
        )

    @activity.defn(name="tier4_expert_review")
    async def expert_review(self, task: TierInput) -> TierOutcome:
        return TierOutcome(
            tier=4, name=EXPERT, status="not_configured", detail={"reason": "no review policy"}
        )

    def all(self) -> list[object]:
        return [self.sanitise, self.rules, self.classifier, self.judge, self.expert_review]
