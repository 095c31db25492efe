"""Typed FastAPI dependencies: settings, DB session, Temporal client, caller's organisation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import math
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.dispatcher import Dispatcher
from api.errors import ApiError
from api.event_hub import EventHub
from core.db import autocommit_sessions
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
    # Starts the workflows of accepted traces off the request path.
    dispatcher: Dispatcher = field(init=False)
    # Wakes the open event streams when their organisation has news.
    events: EventHub = field(init=False)

    # Sessions whose every statement commits on its own: one round trip for a
    # single read or write instead of three (BEGIN, statement, COMMIT).
    autocommit_sessions: async_sessionmaker[AsyncSession] = field(init=False)

    def __post_init__(self) -> None:
        self.autocommit_sessions = autocommit_sessions(self.session_factory)
        self.packs = PackResolver(self.autocommit_sessions)
        self.dispatcher = Dispatcher(self.temporal, self.settings, self.session_factory)
        self.events = EventHub(self.session_factory.kw["bind"])


async def get_resources(request: Request) -> AppResources:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a
    # thread hop per request (5 % of the API's CPU under steady ingestion).
    resources: AppResources = request.app.state.resources
    return resources


Resources = Annotated[AppResources, Depends(get_resources)]


async def get_session(resources: Resources) -> AsyncIterator[AsyncSession]:
    async with resources.session_factory() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def new_api_key(settings: Settings) -> tuple[str, str, str]:
    """Returns (key, hash, display prefix). The key is shown once."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_api_key(key, settings), key[: len(API_KEY_PREFIX) + 6]


def hash_api_key(key: str, settings: Settings) -> str:
    """HMAC-SHA256 of the key under the server's pepper; plain SHA-256 without one.

    The key has 256 random bits, so one fast hash is enough against guessing;
    the pepper keeps a stolen database from confirming a leaked key on its own.
    """
    if settings.api_key_pepper is None:
        return _unpeppered_hash(key)
    pepper = settings.api_key_pepper.get_secret_value().encode()
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def _unpeppered_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    """What authentication needs of a stored API key."""

    id: uuid.UUID
    organization_id: uuid.UUID
    key_hash: str
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


# Built once (see core/db.py): every authenticated request runs them.
_KEY_COLUMNS = (ApiKey.id, ApiKey.organization_id, ApiKey.key_hash, ApiKey.revoked_at, ApiKey.last_used_at)
_KEY_BY_HASH = select(*_KEY_COLUMNS).where(ApiKey.key_hash == bindparam("hashed"))
_KEY_BY_EITHER_HASH = select(*_KEY_COLUMNS).where(
    ApiKey.key_hash.in_([bindparam("hashed"), bindparam("legacy")])
)
_REHASH = update(ApiKey).where(ApiKey.id == bindparam("key_id")).values(key_hash=bindparam("hashed"))
_TOUCH = update(ApiKey).where(ApiKey.id == bindparam("key_id")).values(last_used_at=bindparam("used_at"))


async def find_api_key(session: AsyncSession, token: str, settings: Settings) -> StoredKey | None:
    """The stored key for ``token``, by its hash (the lookup compares hashes, never keys).

    A key stored before the pepper was set is found by its old hash and
    re-hashed with the pepper, so that turning the pepper on needs no new keys.
    """
    hashed = hash_api_key(token, settings)
    if settings.api_key_pepper is None:
        row = (await session.execute(_KEY_BY_HASH, {"hashed": hashed})).one_or_none()
        return StoredKey(*row) if row else None
    legacy = _unpeppered_hash(token)
    row = (await session.execute(_KEY_BY_EITHER_HASH, {"hashed": hashed, "legacy": legacy})).one_or_none()
    if row is None:
        return None
    key = StoredKey(*row)
    if key.key_hash == legacy:
        await session.execute(_REHASH, {"key_id": key.id, "hashed": hashed})
        await session.commit()
        key = dataclasses.replace(key, key_hash=hashed)
    return key


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


def has_admin_token(request: Request, settings: Settings) -> bool:
    """Whether the request carries the deployment's admin token as its bearer (compared in constant time)."""
    admin = settings.admin_token
    if admin is None:
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), admin.get_secret_value())


@dataclass(frozen=True)
class Caller:
    organization_id: uuid.UUID
    api_key_id: uuid.UUID


async def get_caller(request: Request, resources: Resources) -> Caller:
    token = bearer_token(request)
    if not token:
        raise ApiError(401, "missing_api_key", "An API key is required", headers=_UNAUTHORIZED_HEADERS)
    if not token.startswith(API_KEY_PREFIX):
        raise ApiError(401, "invalid_api_key", "The API key is not valid", headers=_UNAUTHORIZED_HEADERS)
    # A connection of its own, in autocommit (no BEGIN/COMMIT round trips),
    # back in the pool before the route runs: a route that then waits on
    # Temporal or opens a session of its own never holds two connections. (When
    # the lookup held the request's connection, more concurrent requests than
    # pooled connections deadlocked the pool until its timeout.)
    async with resources.autocommit_sessions() as session:
        return await _authenticate(request, session, resources, token)


async def _authenticate(request: Request, session: AsyncSession, resources: Resources, token: str) -> Caller:
    key = await find_api_key(session, token, resources.settings)
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
        await session.execute(_TOUCH, {"key_id": key.id, "used_at": now})
    return Caller(organization_id=key.organization_id, api_key_id=key.id)


CurrentCaller = Annotated[Caller, Depends(get_caller)]
