"""Organisations (signup) and the caller's API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, Request, status
from sqlalchemy import select, update

from api.deps import CurrentCaller, Resources, Session, has_admin_token, new_api_key
from api.errors import REQUEST_ERRORS, ApiError, error_responses
from models.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, OrganizationCreate, OrganizationCreated
from models.tables import ApiKey, Organization

router = APIRouter(tags=["organizations"], responses=REQUEST_ERRORS)
# The API-key routes answer what the key check answers too.
_KEY_ERRORS = error_responses(401, 429)


@router.post(
    "/organizations",
    status_code=status.HTTP_201_CREATED,
    response_model=OrganizationCreated,
    responses=error_responses(403),
)
async def create_organization(
    body: OrganizationCreate, request: Request, resources: Resources, session: Session
) -> OrganizationCreated:
    """Create an organisation and its first API key (shown once).

    Open when AEGIS_ALLOW_SIGNUP is on; otherwise needs the admin token as bearer.
    """
    if not (resources.settings.allow_signup or has_admin_token(request, resources.settings)):
        raise ApiError(403, "signup_disabled", "Signup is closed; an admin token is required")
    org = Organization(id=uuid.uuid4(), name=body.name, email=str(body.email))
    key, key_hash, prefix = new_api_key(resources.settings)
    session.add(org)
    await session.flush()
    session.add(ApiKey(organization_id=org.id, name="default", key_hash=key_hash, prefix=prefix))
    await session.commit()
    return OrganizationCreated(organization_id=org.id, name=org.name, api_key=key, api_key_prefix=prefix)


def _key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


@router.post(
    "/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated, responses=_KEY_ERRORS
)
async def create_api_key(
    body: ApiKeyCreate, caller: CurrentCaller, session: Session, resources: Resources
) -> ApiKeyCreated:
    key, key_hash, prefix = new_api_key(resources.settings)
    row = ApiKey(organization_id=caller.organization_id, name=body.name, key_hash=key_hash, prefix=prefix)
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return ApiKeyCreated(**_key_out(row).model_dump(), api_key=key)


@router.get("/api-keys", response_model=list[ApiKeyOut], responses=_KEY_ERRORS)
async def list_api_keys(caller: CurrentCaller, session: Session) -> list[ApiKeyOut]:
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.organization_id == caller.organization_id).order_by(ApiKey.created_at)
    )
    return [_key_out(k) for k in rows]


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_KEY_ERRORS | error_responses(404),
)
async def revoke_api_key(key_id: uuid.UUID, caller: CurrentCaller, session: Session) -> None:
    result = await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id, ApiKey.organization_id == caller.organization_id, ApiKey.revoked_at.is_(None)
        )
        .values(revoked_at=dt.datetime.now(dt.UTC))
        .returning(ApiKey.id)
    )
    if result.first() is None:
        exists = await session.scalar(
            select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.organization_id == caller.organization_id)
        )
        if exists is None:
            raise ApiError(404, "not_found", "API key not found")
    await session.commit()
