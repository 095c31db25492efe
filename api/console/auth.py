"""Console sign-in: an organisation API key exchanged for a session cookie.

The cookie holds a random token; PostgreSQL holds its sha256, the
organisation, the key it came from and the session's CSRF token. The
cookie is HttpOnly (no script reads it), SameSite=Lax (no other site's
form or script sends it) and Secure (HTTPS only; browsers treat localhost
as secure).
Every form carries the CSRF token, and a POST without the right one is
refused, so a page on another origin cannot act for a signed-in user even
where SameSite is not enforced. The sign-in form itself is protected the
same way with a token in a cookie of its own (double submit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request, Response
from sqlalchemy import delete, select

from api.deps import API_KEY_PREFIX, AppResources, Caller, find_api_key
from models.tables import ApiKey, ConsoleSession

SESSION_COOKIE = "aegis_console"
SIGN_IN_CSRF_COOKIE = "aegis_console_csrf"
SESSION_LIFETIME = dt.timedelta(hours=12)
COOKIE_PATH = "/console"


@dataclass(frozen=True)
class SignedIn:
    """The console user: who they act as (as an API caller), and the session's CSRF token."""

    caller: Caller
    csrf_token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def set_cookie(response: Response, resources: AppResources, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        # Lax: a link to a console page from mail or chat arrives signed in;
        # every form is CSRF-checked, so other sites still cannot act.
        samesite="lax",
        secure=resources.settings.console_secure_cookies,
    )


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(32)


async def sign_in(resources: AppResources, api_key: str) -> tuple[str, SignedIn] | None:
    """A new session for a valid, unrevoked key: (cookie token, user); None otherwise."""
    if not api_key.startswith(API_KEY_PREFIX):
        return None
    # No session.begin(): finding a key stored before the pepper commits its new hash.
    async with resources.session_factory() as session:
        key = await find_api_key(session, api_key, resources.settings)
        if key is None or key.revoked_at is not None:
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session.add(
            ConsoleSession(
                token_hash=_hash(token),
                organization_id=key.organization_id,
                api_key_id=key.id,
                csrf_token=csrf,
                expires_at=dt.datetime.now(dt.UTC) + SESSION_LIFETIME,
            )
        )
        await session.commit()
        return token, SignedIn(Caller(organization_id=key.organization_id, api_key_id=key.id), csrf)


async def signed_in(request: Request, resources: AppResources) -> SignedIn | None:
    """The user of the request's session cookie, while the session lasts and its key is not revoked."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    async with resources.autocommit_sessions() as session:
        row = (
            await session.execute(
                select(ConsoleSession.organization_id, ConsoleSession.api_key_id, ConsoleSession.csrf_token)
                .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
                .where(
                    ConsoleSession.token_hash == _hash(token),
                    ConsoleSession.expires_at > dt.datetime.now(dt.UTC),
                    ApiKey.revoked_at.is_(None),
                )
            )
        ).one_or_none()
    if row is None:
        return None
    return SignedIn(Caller(organization_id=row.organization_id, api_key_id=row.api_key_id), row.csrf_token)


async def sign_out(request: Request, resources: AppResources) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with resources.autocommit_sessions() as session:
            await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _hash(token)))
