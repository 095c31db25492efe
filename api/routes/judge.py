"""An organisation's LLM judge: provider and model per domain, API keys, limits."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses, validation_details
from core.judges import DEFAULT_SCOPE, StoredJudgeSettings, month_to_date_spend, private_host, url_host
from core.secrets import SecretKeyMissing, encrypt_secret, key_hint
from evaluators.judge.config import JudgeConfig, ModelPrice, Provider
from models.tables import JudgeConfig as JudgeConfigRow
from models.tables import Organization

router = APIRouter(tags=["judge"], responses=AUTHENTICATED_ERRORS)

# "default" in the path means the organisation-wide row.
Scope = Annotated[
    str,
    Path(
        pattern=r"^(default|[a-z][a-z0-9_-]{0,63})$",
        description="`default` for every domain, or one domain name.",
    ),
]


class JudgeConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Provider
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    base_url: str | None = None
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=1024, ge=1, le=32000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    api_key: SecretStr | None = Field(
        default=None,
        description="Stored encrypted and never returned. Omit to keep the stored key (dropped when "
        "base_url changes); with no key, the deployment's key is used only for its own provider "
        "and endpoint.",
    )
    send_raw_text: bool = Field(
        default=False,
        description="Send the trace as written instead of Tier 0's redacted copy (personal data included).",
    )
    price: ModelPrice | None = Field(
        default=None, description="Price of this model if the built-in table lacks it."
    )


class JudgeConfigOut(BaseModel):
    scope: str
    provider: str
    model: str
    base_url: str | None
    temperature: float
    max_tokens: int
    timeout_seconds: float
    send_raw_text: bool
    price: ModelPrice | None
    has_api_key: bool
    api_key_hint: str | None
    updated_at: dt.datetime


class JudgeLimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    monthly_budget_usd: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        allow_inf_nan=False,
        description="Judge spend cap per calendar month (UTC); null: deployment default.",
    )
    calls_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Judge calls per minute; null: deployment default."
    )


class JudgeOverview(BaseModel):
    configs: list[JudgeConfigOut]
    deployment_default: dict[str, Any] | None = Field(
        description="The judge used where the organisation has none (no key shown)."
    )
    monthly_budget_usd: float | None
    calls_per_minute: int
    month_to_date_cost_usd: float


def _scope_key(scope: str) -> str:
    return DEFAULT_SCOPE if scope == "default" else scope


def _config_out(row: JudgeConfigRow) -> JudgeConfigOut:
    stored = StoredJudgeSettings.model_validate(row.settings)
    return JudgeConfigOut(
        scope="default" if row.domain == DEFAULT_SCOPE else row.domain,
        **stored.judge.model_dump(exclude={"provider", "model"}),
        provider=stored.judge.provider,
        model=stored.judge.model,
        send_raw_text=stored.send_raw_text,
        price=stored.price,
        has_api_key=row.api_key_encrypted is not None,
        api_key_hint=row.api_key_hint,
        updated_at=row.updated_at,
    )


@router.get("/judge", response_model=JudgeOverview)
async def get_judge(caller: CurrentCaller, session: Session, resources: Resources) -> JudgeOverview:
    """Which judge runs for which domain, the limits, and this month's spend."""
    settings = resources.settings
    rows = await session.scalars(
        select(JudgeConfigRow)
        .where(JudgeConfigRow.organization_id == caller.organization_id)
        .order_by(JudgeConfigRow.domain)
    )
    organization = await session.get(Organization, caller.organization_id)
    assert organization is not None  # the caller's key belongs to it
    budget = organization.judge_monthly_budget_usd
    deployment = None
    if settings.judge_provider != "none":
        deployment = {
            "provider": settings.judge_provider,
            "model": settings.judge_model,
            "base_url": settings.judge_base_url,
        }
    spent = await month_to_date_spend(session, caller.organization_id, dt.datetime.now(dt.UTC))
    return JudgeOverview(
        configs=[_config_out(row) for row in rows],
        deployment_default=deployment,
        monthly_budget_usd=float(budget) if budget is not None else settings.judge_monthly_budget_usd,
        calls_per_minute=organization.judge_calls_per_minute or settings.judge_org_calls_per_minute,
        month_to_date_cost_usd=float(spent),
    )


@router.put("/judge/configs/{scope}", response_model=JudgeConfigOut, responses=error_responses(409))
async def put_judge_config(
    scope: Scope, body: JudgeConfigIn, caller: CurrentCaller, session: Session, resources: Resources
) -> JudgeConfigOut:
    """Set the judge for one domain (or the organisation's default)."""
    try:
        config = JudgeConfig(
            provider=body.provider,
            model=body.model,
            base_url=body.base_url,
            temperature=body.temperature,
            max_tokens=body.max_tokens,
            timeout_seconds=body.timeout_seconds,
        )
    except ValidationError as exc:
        # JudgeConfig's own checks (base_url); the details never echo the input.
        details = validation_details(exc.errors())
        for detail in details:
            detail["field"] = "body" + (f".{detail['field']}" if detail["field"] else "")
        raise ApiError(422, "invalid_judge_config", "Invalid judge configuration", details) from None
    if config.base_url and not url_host(config.base_url):
        raise ApiError(
            422,
            "invalid_judge_config",
            "base_url has no valid host",
            [{"field": "body.base_url", "message": "no valid host"}],
        )
    if config.base_url and private_host(config.base_url) and not resources.settings.allow_private_urls:
        raise ApiError(
            422,
            "invalid_judge_config",
            "base_url points at a private or local address, which this deployment does not allow",
            [{"field": "body.base_url", "message": "private or local address"}],
        )
    stored = StoredJudgeSettings(judge=config, send_raw_text=body.send_raw_text, price=body.price)
    values: dict[str, Any] = {
        "settings": stored.model_dump(mode="json"),
        "updated_at": dt.datetime.now(dt.UTC),
    }
    if body.api_key is None:
        existing = await session.scalar(
            select(JudgeConfigRow).where(
                JudgeConfigRow.organization_id == caller.organization_id,
                JudgeConfigRow.domain == _scope_key(scope),
            )
        )
        if existing is not None and existing.settings.get("judge", {}).get("base_url") != config.base_url:
            # A stored key never follows the config to a new endpoint.
            values |= {"api_key_encrypted": None, "api_key_hint": None}
    if body.api_key is not None:
        plaintext = body.api_key.get_secret_value()
        try:
            values["api_key_encrypted"] = encrypt_secret(resources.settings, plaintext)
        except SecretKeyMissing:
            raise ApiError(
                409,
                "encryption_unavailable",
                "This deployment has no AEGIS_SECRET_KEY, so it cannot store API keys",
            ) from None
        values["api_key_hint"] = key_hint(plaintext)
    statement = insert(JudgeConfigRow).values(
        organization_id=caller.organization_id, domain=_scope_key(scope), **values
    )
    row = await session.scalar(
        statement.on_conflict_do_update(
            index_elements=[JudgeConfigRow.organization_id, JudgeConfigRow.domain], set_=values
        ).returning(JudgeConfigRow),
        # The row may be in this session already (read above): refresh it from the database.
        execution_options={"populate_existing": True},
    )
    await session.commit()
    assert row is not None
    return _config_out(row)


@router.delete(
    "/judge/configs/{scope}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404)
)
async def delete_judge_config(scope: Scope, caller: CurrentCaller, session: Session) -> None:
    deleted = await session.execute(
        delete(JudgeConfigRow).where(
            JudgeConfigRow.organization_id == caller.organization_id,
            JudgeConfigRow.domain == _scope_key(scope),
        )
    )
    await session.commit()
    if deleted.rowcount == 0:
        raise ApiError(404, "not_found", f"No judge configuration for scope {scope!r}")


@router.put("/judge/limits", response_model=JudgeLimitsIn)
async def put_judge_limits(body: JudgeLimitsIn, caller: CurrentCaller, session: Session) -> JudgeLimitsIn:
    """The monthly spend cap and call rate of this organisation's judge."""
    await session.execute(
        update(Organization)
        .where(Organization.id == caller.organization_id)
        .values(
            judge_monthly_budget_usd=body.monthly_budget_usd, judge_calls_per_minute=body.calls_per_minute
        )
    )
    await session.commit()
    return body
