"""Activities that run the evaluation tiers on a stored trace."""

from __future__ import annotations

import time
import uuid
from typing import Any, NamedTuple

from sqlalchemy import any_, bindparam, case, select, update
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import trace_not_found
from core import events
from core.classifier_models import ModelStore
from core.db import autocommit_sessions
from core.packs import PackResolver, published_version
from evaluators import classifier
from evaluators.classifier import ModelArtefactError
from evaluators.escalation import CLASSIFIER, CLASSIFIER_SCREEN, RULES, RULES_TIER, SANITISE
from evaluators.rules import DomainPack, evaluate_rules
from evaluators.sanitize import sanitise, unknown_domain_finding
from evaluators.types import NormalisedTrace, Severity, Tier0Result
from models.schemas import ReviewPolicy, TierInput, TierOutcome, TraceStatus
from models.tables import Alert, Trace

TRACES = Trace.__table__
# What the tiers read of a trace: its text, nothing else.
TRACE_TEXT = (
    TRACES.c.input,
    TRACES.c.output,
    TRACES.c["metadata"],
    TRACES.c.rag_contexts,
    TRACES.c.rl_episode,
)


# Tier 0's one statement: mark the trace evaluating, and return its text and
# the organisation's newest published pack for its domain. Built once and
# executed with parameters (see core.db on prepared statements); bound
# parameter names differ from column names, which an UPDATE reserves.
# ``= ANY(ARRAY[...])`` rather than ``IN (...)``: SQLAlchemy renders an IN
# list's parameters into the SQL again at every execution, 2 % of the
# worker's time under the pipeline's load.
_WAITING = array([TraceStatus.PENDING_DISPATCH.value, TraceStatus.QUEUED.value])
_START = (
    update(TRACES)
    .where(TRACES.c.id == bindparam("trace"), TRACES.c.organization_id == bindparam("organization"))
    .values(
        status=case((TRACES.c.status == any_(_WAITING), TraceStatus.EVALUATING.value), else_=TRACES.c.status)
    )
    .returning(*TRACE_TEXT, published_version(bindparam("organization"), bindparam("pack_domain")))
)
# The trace's text, for the tiers after Tier 0 (and the judge).
LOAD_TRACE_TEXT = select(*TRACE_TEXT).where(
    TRACES.c.id == bindparam("trace"), TRACES.c.organization_id == bindparam("organization")
)


class TraceText(NamedTuple):
    input: str
    output: str
    metadata: dict[str, Any]
    rag_contexts: list[Any] | None
    rl_episode: dict[str, Any] | None


def normalise(trace: TraceText) -> tuple[NormalisedTrace, Tier0Result]:
    """Tier 0's normalisation of the stored trace: each tier that reads the
    text works on it (the evidence offsets point into it)."""
    return sanitise(
        trace.input,
        trace.output,
        trace.metadata,
        rag_contexts=trace.rag_contexts,
        rl_episode=trace.rl_episode,
    )


def _review_policy(pack: DomainPack) -> ReviewPolicy:
    policy = pack.escalation
    return ReviewPolicy(
        risk_level=pack.risk_level,
        judge_ratings=list(policy.review_judge_ratings),
        confidence_below=policy.review_confidence_below,
        audit_sample_rate=policy.audit_sample_rate,
        deadline_hours=policy.review_deadline_hours,
    )


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class TierActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], packs: PackResolver) -> None:
        self._sessions = session_factory
        # For the reads and the one-statement update that need no transaction.
        self._statements = autocommit_sessions(session_factory)
        self._packs = packs
        self._models = ModelStore(self._statements)
        self._alerted_models: set[tuple[uuid.UUID, str]] = set()

    async def _start(self, task: TierInput) -> tuple[TraceText, int | None]:
        """Tier 0's one statement: mark the trace evaluating, and return its
        text and the organisation's newest published pack for its domain."""
        parameters = {
            "trace": task.trace_id,
            "organization": task.organization_id,
            "pack_domain": task.domain,
        }
        async with self._statements() as session:  # autocommit: the update commits by itself
            row = (await session.execute(_START, parameters)).first()
        if row is None:
            raise trace_not_found()
        return TraceText(*row[:-1]), row[-1]

    async def _load(self, task: TierInput) -> TraceText:
        """The trace's text, for the tiers after Tier 0."""
        async with self._statements() as session:
            row = (
                await session.execute(
                    LOAD_TRACE_TEXT, {"trace": task.trace_id, "organization": task.organization_id}
                )
            ).first()
        if row is None:
            raise trace_not_found()
        return TraceText(*row)

    @activity.defn(name="tier0_sanitise")
    async def tier0(self, task: TierInput) -> TierOutcome:
        """Tier 0: normalise, validate, pick the domain pack; refuse what cannot be evaluated."""
        trace, published = await self._start(task)
        resolved = await self._packs.resolve(task.organization_id, task.domain, published)
        started = time.perf_counter()
        _, result = normalise(trace)
        findings = list(result.findings)
        if resolved is None:
            findings.append(unknown_domain_finding(task.domain))
        # An empty output or an unknown domain cannot be evaluated by any later tier.
        cannot_evaluate = resolved is None or not result.valid
        return TierOutcome(
            tier=0,
            name=SANITISE,
            status="completed",
            severity=Severity.max_of(f.severity for f in findings),
            settled=cannot_evaluate,
            findings=findings,
            detail={"valid": result.valid and resolved is not None, "pii_counts": result.pii_counts},
            duration_ms=_elapsed_ms(started),
            pack=resolved[0] if resolved else None,
            review=_review_policy(resolved[1]) if resolved else None,
        )

    @activity.defn(name="tier1_rules")
    async def tier1(self, task: TierInput) -> TierOutcome:
        """Tier 1: the domain pack's deterministic rules."""
        if task.pack is None:
            raise ValueError("Tier 1 needs the pack chosen by Tier 0")
        trace = await self._load(task)
        pack = await self._packs.get(task.organization_id, task.pack)
        started = time.perf_counter()
        normalised, _ = normalise(trace)
        result = evaluate_rules(normalised, pack)
        policy = pack.escalation
        # The rules settle the trace unless the pack's policy wants a smarter tier.
        escalate: str | None = policy.judge_reason(result.max_severity, key=str(task.trace_id))
        if (
            escalate is None
            and policy.classifier_screens_rule_passes
            and result.max_severity.rank < pack.pass_threshold.rank
            and await self._models.has_promoted(task.organization_id, task.domain)
        ):
            escalate = CLASSIFIER_SCREEN
        return TierOutcome(
            tier=1,
            name=RULES,
            status="completed",
            severity=result.max_severity,
            settled=escalate is None,
            findings=result.findings,
            detail={
                "rules_evaluated": result.rules_evaluated,
                "pack": pack.name,
                "pack_version": pack.version,
                "escalate": escalate,
            },
            duration_ms=_elapsed_ms(started),
        )

    # Tier 3 is activities/judge.py, Tier 4 the workflow's own review wait.

    @activity.defn(name="tier2_classifier")
    async def tier2(self, task: TierInput) -> TierOutcome:
        """Tier 2: the organisation's promoted risk model for the domain.

        Without one (none trained yet, or its artefact unreadable) it reports
        "not configured" and the trace goes on to the judge as before, or,
        when Tier 1 sent a rules pass only to be screened, the rules' pass stands.
        """
        if task.pack is None:
            raise ValueError("Tier 2 needs the pack chosen by Tier 0")
        rules = next((outcome for outcome in task.previous if outcome.tier == RULES_TIER), None)
        if rules is None:
            raise ValueError("Tier 2 needs Tier 1's outcome")
        # A rules pass sent here only to be screened keeps the rules' verdict
        # when the model has gone meanwhile; anything else goes on to the judge.
        screening = rules.detail.get("escalate") == CLASSIFIER_SCREEN
        try:
            promoted = await self._models.promoted(task.organization_id, task.domain)
            missing = "no model trained"
        except ModelArtefactError as exc:
            await self._alert_unreadable_model(task, str(exc))
            promoted, missing = None, "model unreadable"
        if promoted is None:
            return TierOutcome(
                tier=2,
                name=CLASSIFIER,
                status="not_configured",
                settled=screening,
                detail={"reason": missing},
            )
        trace = await self._load(task)
        pack = await self._packs.get(task.organization_id, task.pack)
        started = time.perf_counter()
        normalised, _ = normalise(trace)
        features = classifier.featurise(
            normalised.input,
            normalised.output,
            [finding.rule_id for finding in rules.findings],
            [str(finding.severity) for finding in rules.findings],
        )
        risk = promoted.model.risk(features)
        policy = pack.escalation
        decision = classifier.decide(risk, policy.classifier_settle_below, policy.classifier_review_above)
        return TierOutcome(
            tier=2,
            name=CLASSIFIER,
            status="completed",
            settled=decision == "settle",
            # Settled here means low risk: a pass. Otherwise a smarter tier decides.
            passed=True if decision == "settle" else None,
            detail={
                "risk": round(risk, 4),
                "confidence": round(abs(2 * risk - 1), 4),
                "decision": decision,
                "model_version": promoted.version,
                "model_id": str(promoted.id),
            },
            duration_ms=_elapsed_ms(started),
        )

    async def _alert_unreadable_model(self, task: TierInput, problem: str) -> None:
        # One alert per organisation and domain from this worker, not one per trace.
        key = (task.organization_id, task.domain)
        if key in self._alerted_models:
            return
        self._alerted_models.add(key)
        alert_id = uuid.uuid4()
        async with self._sessions() as session, session.begin():
            session.add(
                Alert(
                    id=alert_id,
                    organization_id=task.organization_id,
                    trace_id=task.trace_id,
                    severity=Severity.HIGH.value,
                    kind="classifier_model_unreadable",
                    message=f"The promoted Tier 2 model for domain {task.domain!r} cannot be read "
                    f"({problem}); traces go to the judge until a model is trained or rolled back.",
                    details={"domain": task.domain},
                )
            )
            await session.flush()
            raised = {
                "alert_id": str(alert_id),
                "severity": Severity.HIGH.value,
                "kind": "classifier_model_unreadable",
            }
            await events.publish(
                session, task.organization_id, [events.NewEvent(events.ALERT_RAISED, task.trace_id, raised)]
            )

    def all(self) -> list[object]:
        return [self.tier0, self.tier1, self.tier2]
