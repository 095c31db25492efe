"""Tier 4 activities: applying an expert's label, and expiring a review."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import trace_not_found
from activities.traces import locked_trace
from core import analytics, events
from core.judges import add_usage
from core.packs import PackResolver
from domains import available_domains
from evaluators.escalation import EXPERT, EXPERT_TIER
from evaluators.types import Severity
from models.schemas import (
    ApplyLabelInput,
    FinalVerdict,
    LabelResult,
    PackRef,
    ReviewExpiredInput,
    TraceStatus,
)
from models.tables import Alert, EvaluationResult, ExpertLabel, ReviewRequest, Trace, VerdictChange

# The label that decides among several: the latest (a second opinion
# replaces the first; every label stays on record).
DECIDING_LABEL = "latest"


def _with_expert_tier(tiers: list[Any], entry: dict[str, Any]) -> list[Any]:
    """The stored tier summaries with the expert's entry added or replaced."""
    return [tier for tier in tiers if tier.get("tier") != EXPERT_TIER] + [entry]


async def _resolve_review(
    session: AsyncSession, trace_id: uuid.UUID, version: int, status: str, now: dt.datetime
) -> None:
    """Close the version's pending review request as ``status``."""
    await session.execute(
        update(ReviewRequest)
        .where(
            ReviewRequest.trace_id == trace_id,
            ReviewRequest.version == version,
            ReviewRequest.status == "pending",
        )
        .values(status=status, resolved_at=now)
    )


class ReviewActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], packs: PackResolver) -> None:
        self._sessions = session_factory
        self._packs = packs

    async def _alert_severities(self, organization_id: uuid.UUID, result: EvaluationResult) -> set[str]:
        """The alerting severities of the pack the evaluation ran with."""
        if result.pack_name is None or result.pack_version is None:
            return set()
        # An organisation's pack can never take a shipped pack's name.
        source = "builtin" if result.pack_name in available_domains() else "organization"
        try:
            pack = await self._packs.get(
                organization_id, PackRef(source=source, name=result.pack_name, version=result.pack_version)
            )
        except LookupError:
            return set()
        return {severity.value for severity in pack.alerts.severities}

    @activity.defn(name="apply_expert_label")
    async def apply_label(self, task: ApplyLabelInput) -> LabelResult:
        """Store the label (once), let the latest label decide the final
        verdict, and write an audit row when that verdict changes — in one
        transaction, under the trace's row lock."""
        now = dt.datetime.now(dt.UTC)
        label = task.label
        async with self._sessions() as session, session.begin():
            trace = await locked_trace(session, task.trace_id, task.organization_id)
            # A label from the API is stored already (with its notes); one
            # from a signal is stored here. A retried attempt inserts nothing.
            await session.execute(
                insert(ExpertLabel)
                .values(
                    id=task.label_id,
                    organization_id=task.organization_id,
                    trace_id=task.trace_id,
                    version=task.version,
                    verdict=label.verdict,
                    severity=label.resolved_severity().value,
                    issues=[],
                    reviewer=label.reviewer,
                    source=task.source,
                )
                .on_conflict_do_nothing(index_elements=[ExpertLabel.id])
            )
            labels = list(
                await session.scalars(
                    select(ExpertLabel)
                    .where(ExpertLabel.trace_id == task.trace_id, ExpertLabel.version == task.version)
                    .order_by(ExpertLabel.created_at, ExpertLabel.id)
                )
            )
            deciding = labels[-1]
            verdict = FinalVerdict(
                passed=deciding.verdict == "pass", severity=Severity(deciding.severity), decided_by=EXPERT
            )
            disagreement = len({item.verdict for item in labels}) > 1

            result = await session.scalar(
                select(EvaluationResult).where(
                    EvaluationResult.trace_id == task.trace_id, EvaluationResult.version == task.version
                )
            )
            if result is None:
                raise trace_not_found()  # nothing evaluated to label: the workflow stops
            before = FinalVerdict(
                passed=result.passed, severity=Severity(result.severity), decided_by=result.decided_by
            )
            changed = before != verdict
            if changed:
                session.add(
                    VerdictChange(
                        organization_id=task.organization_id,
                        trace_id=task.trace_id,
                        version=task.version,
                        from_passed=before.passed,
                        from_severity=before.severity.value,
                        from_decided_by=before.decided_by,
                        to_passed=verdict.passed,
                        to_severity=verdict.severity.value,
                        to_decided_by=verdict.decided_by,
                        changed_by=deciding.reviewer,
                        reason="expert_label",
                        label_id=deciding.id,
                    )
                )
            happened = []
            if changed:
                happened.append(
                    events.NewEvent(
                        events.VERDICT_OVERRIDDEN,
                        task.trace_id,
                        {
                            "version": task.version,
                            "current": result.current,
                            "from": {
                                "passed": before.passed,
                                "severity": before.severity.value,
                                "decided_by": before.decided_by,
                            },
                            "to": {
                                "passed": verdict.passed,
                                "severity": verdict.severity.value,
                                "decided_by": verdict.decided_by,
                            },
                            "changed_by": deciding.reviewer,
                        },
                    )
                )
            if changed and verdict.severity.value in await self._alert_severities(
                task.organization_id, result
            ):
                # The pack's alert rules apply to an expert's verdict too.
                alert_id = uuid.uuid4()
                happened.append(
                    events.NewEvent(
                        events.ALERT_RAISED,
                        task.trace_id,
                        {
                            "alert_id": str(alert_id),
                            "severity": verdict.severity.value,
                            "kind": "expert_label",
                        },
                    )
                )
                session.add(
                    Alert(
                        id=alert_id,
                        organization_id=task.organization_id,
                        trace_id=task.trace_id,
                        severity=verdict.severity.value,
                        kind="expert_label",
                        message=f"Expert label: trace {'passed' if verdict.passed else 'failed'}, "
                        f"severity {verdict.severity.value}",
                        details={"label_id": str(deciding.id), "reviewer": deciding.reviewer},
                    )
                )
            result.passed = verdict.passed
            result.severity = verdict.severity.value
            result.decided_by = verdict.decided_by
            result.tiers = _with_expert_tier(
                result.tiers,
                {
                    "tier": EXPERT_TIER,
                    "name": EXPERT,
                    "status": "completed",
                    "severity": verdict.severity.value,
                    "passed": verdict.passed,
                    "settled": True,
                    "detail": {"labels": len(labels), "disagreement": disagreement, "rule": DECIDING_LABEL},
                },
            )
            result.updated_at = now
            await _resolve_review(session, task.trace_id, task.version, "labelled", now)
            if task.version >= trace.evaluation_version:
                trace.status = TraceStatus.COMPLETED.value
            await session.flush()
            # The counters other transactions share come last, so their rows
            # are locked only until the commit right after.
            if changed and result.current:
                # Issues stay as they are; only the verdict the trace counts under moves.
                await analytics.move(
                    session,
                    task.organization_id,
                    _counted(trace, result.domain, before),
                    _counted(trace, result.domain, verdict),
                )
            if len(labels) == 1:
                await add_usage(session, task.organization_id, trace.domain, EXPERT, evaluations=1)
            await events.publish(session, task.organization_id, happened)
        return LabelResult(
            label_id=task.label_id,
            verdict=verdict,
            changed=changed,
            labels=len(labels),
            disagreement=disagreement,
        )

    @activity.defn(name="expire_review")
    async def expire(self, task: ReviewExpiredInput) -> None:
        """The deadline passed without a label: the automated verdict stands."""
        now = dt.datetime.now(dt.UTC)
        async with self._sessions() as session, session.begin():
            trace = await locked_trace(session, task.trace_id, task.organization_id)
            await _resolve_review(session, task.trace_id, task.version, "expired", now)
            result = await session.scalar(
                select(EvaluationResult).where(
                    EvaluationResult.trace_id == task.trace_id, EvaluationResult.version == task.version
                )
            )
            if result is not None:
                result.tiers = _with_expert_tier(
                    result.tiers,
                    {
                        "tier": EXPERT_TIER,
                        "name": EXPERT,
                        "status": "expired",
                        "detail": {"reason": "review_expired"},
                    },
                )
            if task.version >= trace.evaluation_version and trace.status == TraceStatus.AWAITING_REVIEW:
                trace.status = TraceStatus.COMPLETED.value

    def all(self) -> list[object]:
        return [self.apply_label, self.expire]


def _counted(trace: Trace, domain: str, verdict: FinalVerdict) -> analytics.CountedEvaluation:
    return analytics.CountedEvaluation(
        trace_created_at=trace.created_at,
        domain=domain,
        model=trace.model,
        passed=verdict.passed,
        severity=verdict.severity.value,
        decided_by=verdict.decided_by,
    )
