"""Activities of the ``TrainClassifier`` workflow: train a candidate Tier 2
model on an organisation's labels, then decide whether it is promoted.

Training data never passes through Temporal (it is trace text): the first
activity reads it, trains and stores the candidate with its held-out
metrics; the second only reads figures from the database.
"""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.classifier_models import (
    ModelStore,
    export_examples,
    lock_domain,
    next_version,
    promoted_id,
    set_promoted,
)
from core.packs import PackResolver
from evaluators import classifier
from evaluators.classifier import Metrics, ModelArtefactError, NotEnoughLabels
from models.schemas import (
    RegisterClassifierInput,
    TrainClassifierInput,
    TrainedCandidate,
    TrainingResult,
    TrainingSweepInput,
    TrainingTarget,
    TrainingTargets,
)
from models.tables import EvaluationResult, ModelVersion


def _metrics(figures: dict[str, object]) -> Metrics:
    return Metrics(**figures)  # type: ignore[arg-type]


class TrainingActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], packs: PackResolver) -> None:
        self._sessions = session_factory
        self._packs = packs
        self._models = ModelStore(session_factory)

    @activity.defn(name="train_classifier")
    async def train(self, task: TrainClassifierInput) -> TrainedCandidate:
        """Export the labelled traces, train on all but the held-out split,
        measure the candidate and the promoted model on that split, store
        the candidate."""
        resolved = await self._packs.latest(task.organization_id, task.domain)
        if resolved is None:
            return TrainedCandidate(reason=f"no domain pack named {task.domain!r}")
        policy = resolved[1].escalation
        async with self._sessions() as session:
            examples = await export_examples(session, task.organization_id, task.domain)
            current_id = await promoted_id(session, task.organization_id, task.domain)
        try:
            current = await self._models.promoted(task.organization_id, task.domain)
        except ModelArtefactError:
            current = None  # an unreadable model is beaten by any readable one
        try:
            # Training is CPU work: off the worker's event loop.
            candidate = await asyncio.to_thread(
                classifier.fit_candidate,
                examples,
                current=current.model if current is not None and current.id == current_id else None,
                threshold=policy.classifier_settle_below,
                seed=task.seed,
                held_out_share=task.held_out_share,
            )
        except NotEnoughLabels as exc:
            return TrainedCandidate(reason=str(exc), training_size=exc.training_size)
        train = candidate.training
        artefact = candidate.model.to_bytes()
        async with self._sessions() as session, session.begin():
            await lock_domain(session, task.organization_id, task.domain)
            row = ModelVersion(
                organization_id=task.organization_id,
                domain=task.domain,
                version=await next_version(session, task.organization_id, task.domain),
                status="candidate",
                training_size=len(train),
                expert_labels=sum(example.source == "expert" for example in train),
                judge_verdicts=sum(example.source == "judge" for example in train),
                seed=task.seed,
                metrics=candidate.metrics.as_dict(),
                baseline_metrics=None if candidate.baseline is None else candidate.baseline.as_dict(),
                compared_with=current_id,
                artefact=artefact,
                artefact_sha256=hashlib.sha256(artefact).hexdigest(),
            )
            session.add(row)
            await session.flush()
            return TrainedCandidate(model_id=row.id, version=row.version, training_size=len(train))

    @activity.defn(name="register_classifier")
    async def register(self, task: RegisterClassifierInput) -> TrainingResult:
        """Promote the candidate if it beats the promoted model on the same
        held-out traces and keeps the pack's recall floor; else keep it,
        with the reason. Runs under the domain's lock, so two runs never
        both promote."""
        async with self._sessions() as session, session.begin():
            candidate = await session.scalar(
                select(ModelVersion).where(
                    ModelVersion.id == task.model_id, ModelVersion.organization_id == task.organization_id
                )
            )
            if candidate is None:
                raise ValueError("candidate model version not found")
            if candidate.status != "candidate":  # a retry after the decision was stored
                return self._result(candidate)
            await lock_domain(session, candidate.organization_id, candidate.domain)
            resolved = await self._packs.latest(candidate.organization_id, candidate.domain)
            floor = resolved[1].escalation.classifier_recall_floor if resolved else 1.0
            current_id = await promoted_id(session, candidate.organization_id, candidate.domain)
            if current_id != candidate.compared_with:
                promote, reason = False, "another version was promoted while this one trained; train again"
            else:
                baseline = (
                    None if candidate.baseline_metrics is None else _metrics(candidate.baseline_metrics)
                )
                promote, reason = classifier.promotion(_metrics(candidate.metrics), baseline, floor)
                if promote and baseline is None and current_id is not None:
                    reason = "the promoted model could not be read, so this one replaces it"
            if promote:
                await set_promoted(session, candidate, reason)
            else:
                candidate.status = "kept"
                candidate.reason = reason
            return self._result(candidate)

    @staticmethod
    def _result(candidate: ModelVersion) -> TrainingResult:
        return TrainingResult(
            status="promoted" if candidate.status in ("promoted", "retired") else "kept",
            reason=candidate.reason or "",
            model_id=candidate.id,
            version=candidate.version,
            training_size=candidate.training_size,
        )

    @activity.defn(name="classifier_training_targets")
    async def targets(self, task: TrainingSweepInput) -> TrainingTargets:
        """Every organisation's domain with at least ``min_new_labels``
        verdicts decided by the judge or an expert since its latest model
        version was trained (or ever, without one)."""
        latest = (
            select(
                ModelVersion.organization_id,
                ModelVersion.domain,
                func.max(ModelVersion.created_at).label("trained_at"),
            )
            .group_by(ModelVersion.organization_id, ModelVersion.domain)
            .subquery()
        )
        query = (
            select(EvaluationResult.organization_id, EvaluationResult.domain)
            .outerjoin(
                latest,
                (latest.c.organization_id == EvaluationResult.organization_id)
                & (latest.c.domain == EvaluationResult.domain),
            )
            .where(
                EvaluationResult.current,
                EvaluationResult.decided_by.in_(("judge", "expert")),
                (latest.c.trained_at.is_(None)) | (EvaluationResult.updated_at > latest.c.trained_at),
            )
            .group_by(EvaluationResult.organization_id, EvaluationResult.domain)
            .having(func.count() >= task.min_new_labels)
            .order_by(EvaluationResult.organization_id, EvaluationResult.domain)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return TrainingTargets(
            targets=[TrainingTarget(organization_id=org, domain=domain) for org, domain in rows]
        )

    def training(self) -> list[object]:
        """The training queue's activity (scikit-learn, CPU)."""
        return [self.train]

    def bookkeeping(self) -> list[object]:
        """The evaluations queue's (database only)."""
        return [self.register, self.targets]
