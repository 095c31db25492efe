"""Tier 2 models in PostgreSQL: the training examples of an organisation and
domain, the model versions, and the promoted model each worker scores with.

Everything here is scoped to one organisation: a model learns only from
that organisation's labels and serves only its traces.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from evaluators.classifier import Example, ModelArtefactError, RiskModel
from evaluators.escalation import JUDGE_TIER, RULES_TIER
from evaluators.sanitize import sanitise
from models.tables import EvaluationResult, ExpertLabel, ModelVersion, Trace


def _tier(tiers: list[Any], number: int) -> dict[str, Any] | None:
    return next((t for t in tiers if isinstance(t, dict) and t.get("tier") == number), None)


def _example(trace: Trace, tiers: list[Any], expert_verdict: str | None) -> Example | None:
    """A trace as a training example: labelled by its latest expert label,
    else by the judge's verdict; None when it has neither."""
    if expert_verdict is not None:
        unsafe, source = expert_verdict == "fail", "expert"
    else:
        judge = _tier(tiers, JUDGE_TIER)
        if judge is None or judge.get("status") != "completed" or not isinstance(judge.get("passed"), bool):
            return None
        unsafe, source = not judge["passed"], "judge"
    rules = _tier(tiers, RULES_TIER) or {}
    findings = [f for f in rules.get("findings", []) if isinstance(f, dict)]
    normalised, _ = sanitise(trace.input, trace.output)
    return Example(
        id=str(trace.id),
        input=normalised.input,
        output=normalised.output,
        rule_ids=tuple(str(f.get("rule_id", "")) for f in findings),
        severities=tuple(str(f.get("severity", "")) for f in findings),
        unsafe=unsafe,
        source=source,  # type: ignore[arg-type]
    )


async def export_examples(session: AsyncSession, organization_id: uuid.UUID, domain: str) -> list[Example]:
    """Every labelled trace of the organisation in the domain, oldest first."""
    latest_label = (
        select(ExpertLabel.trace_id, ExpertLabel.verdict)
        .where(ExpertLabel.organization_id == organization_id)
        .ext(distinct_on(ExpertLabel.trace_id))
        .order_by(ExpertLabel.trace_id, ExpertLabel.created_at.desc())
        .subquery()
    )
    rows = await session.execute(
        select(Trace, EvaluationResult.tiers, latest_label.c.verdict)
        .join(
            EvaluationResult,
            (EvaluationResult.trace_id == Trace.id) & EvaluationResult.current,
        )
        .outerjoin(latest_label, latest_label.c.trace_id == Trace.id)
        .where(Trace.organization_id == organization_id, Trace.domain == domain)
        .order_by(Trace.created_at, Trace.id)
    )
    examples = []
    for trace, tiers, verdict in rows:
        example = _example(trace, tiers or [], verdict)
        if example is not None:
            examples.append(example)
    return examples


@dataclass(frozen=True, slots=True)
class PromotedModel:
    id: uuid.UUID
    version: int
    model: RiskModel


MODEL_VERSIONS = ModelVersion.__table__
# Read by Tier 1 and Tier 2 for every trace they see: built once, executed
# with parameters (see core.db on prepared statements).
_PROMOTED = select(MODEL_VERSIONS.c.id, MODEL_VERSIONS.c.version).where(
    MODEL_VERSIONS.c.organization_id == bindparam("organization"),
    MODEL_VERSIONS.c.domain == bindparam("domain"),
    MODEL_VERSIONS.c.status == "promoted",
)


class ModelStore:
    """The promoted model of each organisation and domain, as one worker
    sees it: which version is promoted is read per call (one indexed row), so
    a promotion takes effect at once; an artefact is read and parsed once
    per version."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory
        self._models: dict[uuid.UUID, RiskModel] = {}

    async def has_promoted(self, organization_id: uuid.UUID, domain: str) -> bool:
        """Whether a model is promoted (its artefact is not read)."""
        async with self._sessions() as session:
            return await promoted_id(session, organization_id, domain) is not None

    async def promoted(self, organization_id: uuid.UUID, domain: str) -> PromotedModel | None:
        """The promoted model, or None when there is none.

        Raises ``ModelArtefactError`` when its stored artefact is unreadable.
        """
        async with self._sessions() as session:
            row = (
                await session.execute(_PROMOTED, {"organization": organization_id, "domain": domain})
            ).first()
            if row is None:
                return None
            model_id, version = row
            model = self._models.get(model_id)
            if model is None:
                artefact = await session.scalar(
                    select(ModelVersion.artefact).where(ModelVersion.id == model_id)
                )
                if artefact is None:
                    raise ModelArtefactError("model artefact is missing")
                model = RiskModel.from_bytes(artefact)
                self._models[model_id] = model
            return PromotedModel(model_id, version, model)


async def promoted_id(session: AsyncSession, organization_id: uuid.UUID, domain: str) -> uuid.UUID | None:
    """The id of the domain's promoted model version, if one is."""
    row = (await session.execute(_PROMOTED, {"organization": organization_id, "domain": domain})).first()
    return None if row is None else row.id


async def next_version(session: AsyncSession, organization_id: uuid.UUID, domain: str) -> int:
    latest = await session.scalar(
        select(func.max(ModelVersion.version)).where(
            ModelVersion.organization_id == organization_id, ModelVersion.domain == domain
        )
    )
    return (latest or 0) + 1


async def lock_domain(session: AsyncSession, organization_id: uuid.UUID, domain: str) -> None:
    """Serialise promotions for one organisation and domain until the
    transaction ends (concurrent training runs queue here)."""
    await session.execute(
        select(
            func.pg_advisory_xact_lock(func.hashtextextended(f"model-versions:{organization_id}:{domain}", 0))
        )
    )


async def set_promoted(session: AsyncSession, model: ModelVersion, reason: str) -> None:
    """Make ``model`` the promoted one, retiring the one before (in the
    caller's transaction, under ``lock_domain``)."""
    await session.execute(
        update(ModelVersion)
        .where(
            ModelVersion.organization_id == model.organization_id,
            ModelVersion.domain == model.domain,
            ModelVersion.status == "promoted",
            ModelVersion.id != model.id,
        )
        .values(status="retired")
    )
    model.status = "promoted"
    model.reason = reason
    model.promoted_at = dt.datetime.now(dt.UTC)
    await session.flush()
