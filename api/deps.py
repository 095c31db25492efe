"""Typed FastAPI dependencies: settings, DB session, Temporal client, caller's organisation."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.errors import ApiError
from core.packs import PackResolver
from core.settings import Settings
from models.tables import ApiKey

API_KEY_PREFIX = "metronis_"
# How stale last_used_at may get before a request writes it again: one write
# per key per minute instead of one per request.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


@dataclass
class AppResources:
    """What the API needs at run time, built once in the lifespan (or by tests)."""

    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    temporal: Client
    # Compiled organisation packs, cached per version like the worker's.
    packs: PackResolver = field(init=False)

    def __post_init__(self) -> None:
        self.packs = PackResolver(self.session_factory)


def get_resources(request: Request) -> AppResources:
    resources: AppResources = request.app.state.resources
    return resources


Resources = Annotated[AppResources, Depends(get_resources)]


async def get_session(resources: Resources) -> AsyncIterator[AsyncSession]:
    async with resources.session_factory() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def new_api_key() -> tuple[str, str, str]:
    """Returns (key, sha256 hex, display prefix). The key is shown once."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_api_key(key), key[: len(API_KEY_PREFIX) + 6]


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "invalid_authorization",
                "Authorization header must be 'Bearer <api key>'",
                headers=_UNAUTHORIZED_HEADERS,
            )
        return token.strip()
    return request.headers.get("x-api-key")


@dataclass(frozen=True)
class Caller:
    organization_id: uuid.UUID
    api_key_id: uuid.UUID


async def get_caller(request: Request, session: Session) -> Caller:
    token = bearer_token(request)
    if not token:
        raise ApiError(401, "missing_api_key", "An API key is required", headers=_UNAUTHORIZED_HEADERS)
    if not token.startswith(API_KEY_PREFIX):
        raise ApiError(401, "invalid_api_key", "The API key is not valid", headers=_UNAUTHORIZED_HEADERS)
    key = (
        await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_api_key(token)))
    ).scalar_one_or_none()
    if key is None:
        raise ApiError(401, "invalid_api_key", "The API key is not valid", headers=_UNAUTHORIZED_HEADERS)
    if key.revoked_at is not None:
        raise ApiError(401, "revoked_api_key", "The API key has been revoked", headers=_UNAUTHORIZED_HEADERS)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        wait = limiter.take(key.id)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "Too many requests for this API key; retry after the Retry-After seconds",
                headers={"Retry-After": str(math.ceil(wait))},
            )
    now = dt.datetime.now(dt.UTC)
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        await session.commit()
    return Caller(organization_id=key.organization_id, api_key_id=key.id)


CurrentCaller = Annotated[Caller, Depends(get_caller)]
