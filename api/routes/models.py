"""Tier 2 models of an organisation: list them, train one, promote or roll back."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import defer
from temporalio.service import RPCError

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses
from core.classifier_models import lock_domain, set_promoted
from core.packs import PackResolver
from models.schemas import DomainName, TrainClassifierInput, training_workflow_id
from models.tables import ModelVersion

router = APIRouter(tags=["models"], responses=AUTHENTICATED_ERRORS)


class ModelVersionOut(BaseModel):
    id: uuid.UUID
    domain: str
    version: int
    status: str = Field(description="promoted (in use), kept (trained, not promoted) or retired.")
    reason: str | None
    training_size: int
    expert_labels: int
    judge_verdicts: int
    seed: int
    metrics: dict[str, Any] = Field(description="Held-out figures of this version.")
    baseline_metrics: dict[str, Any] | None = Field(
        description="The version promoted at training time, on the same held-out traces."
    )
    compared_with: uuid.UUID | None
    artefact_sha256: str
    created_at: dt.datetime
    promoted_at: dt.datetime | None


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: DomainName
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class TrainingStarted(BaseModel):
    workflow_id: str
    domain: str


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: DomainName


def _out(row: ModelVersion) -> ModelVersionOut:
    return ModelVersionOut.model_validate(row, from_attributes=True)


@router.get("/models", response_model=list[ModelVersionOut])
async def list_models(
    caller: CurrentCaller,
    session: Session,
    domain: DomainName | None = None,
    limit: int = Query(default=100, ge=1, le=500),
) -> list[ModelVersionOut]:
    """The organisation's Tier 2 model versions, newest first."""
    # Artefacts (hundreds of kB each) stay in the database.
    query = (
        select(ModelVersion)
        .options(defer(ModelVersion.artefact))
        .where(ModelVersion.organization_id == caller.organization_id)
    )
    if domain is not None:
        query = query.where(ModelVersion.domain == domain)
    rows = await session.scalars(
        query.order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc()).limit(limit)
    )
    return [_out(row) for row in rows]


@router.post(
    "/models/train",
    response_model=TrainingStarted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 503),
)
async def train_model(body: TrainIn, caller: CurrentCaller, resources: Resources) -> TrainingStarted:
    """Start a training run for one domain (``TrainClassifier`` in the
    Temporal UI); ``GET /models`` shows the version it stores and whether
    it was promoted."""
    if await PackResolver(resources.session_factory).latest(caller.organization_id, body.domain) is None:
        raise ApiError(404, "unknown_domain", f"No domain pack named {body.domain!r}")
    workflow_id = training_workflow_id(caller.organization_id, body.domain, uuid.uuid4())
    try:
        await resources.temporal.start_workflow(
            "TrainClassifier",
            TrainClassifierInput(
                organization_id=caller.organization_id,
                domain=body.domain,
                seed=body.seed,
                training_task_queue=resources.settings.training_task_queue,
            ),
            id=workflow_id,
            task_queue=resources.settings.task_queue,
        )
    except RPCError:
        raise ApiError(503, "temporal_unavailable", "Training could not be started; try again") from None
    return TrainingStarted(workflow_id=workflow_id, domain=body.domain)


@router.post("/models/{model_id}/promote", response_model=ModelVersionOut, responses=error_responses(404))
async def promote_model(model_id: uuid.UUID, caller: CurrentCaller, session: Session) -> ModelVersionOut:
    """Put a version in use by hand (an operator's override of the
    automatic rule); the one in use before is retired."""
    row = await session.scalar(
        select(ModelVersion).where(
            ModelVersion.id == model_id, ModelVersion.organization_id == caller.organization_id
        )
    )
    if row is None:
        raise ApiError(404, "not_found", "Model version not found")
    # Held until the commit: no training run decides in between.
    await lock_domain(session, row.organization_id, row.domain)
    await session.refresh(row)
    if row.status != "promoted":
        await set_promoted(session, row, "promoted by hand")
    await session.commit()
    return _out(row)


@router.post("/models/rollback", response_model=ModelVersionOut, responses=error_responses(404, 409))
async def rollback_model(body: RollbackIn, caller: CurrentCaller, session: Session) -> ModelVersionOut:
    """Put back the version that was in use before the current one."""
    await lock_domain(session, caller.organization_id, body.domain)
    versions = ModelVersion.organization_id == caller.organization_id, ModelVersion.domain == body.domain
    current = await session.scalar(select(ModelVersion).where(*versions, ModelVersion.status == "promoted"))
    if current is None:
        raise ApiError(404, "not_found", "No model is in use for this domain")
    previous = await session.scalar(
        select(ModelVersion)
        .where(*versions, ModelVersion.status == "retired", ModelVersion.promoted_at.is_not(None))
        .order_by(ModelVersion.promoted_at.desc())
        .limit(1)
    )
    if previous is None:
        raise ApiError(409, "nothing_to_roll_back_to", "No earlier version of this domain was ever in use")
    await set_promoted(session, previous, f"rolled back from version {current.version}")
    await session.commit()
    return _out(previous)
