"""The organisation's judge token bucket, taken in one statement by workers
that share nothing but PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import autocommit_sessions
from core.judges import take_rate_token
from models.tables import JudgeRateBucket, Organization


async def new_organization(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    async with sessions() as session, session.begin():
        organization = Organization(name="bucket", email="bucket@example.com")
        session.add(organization)
    return organization.id


async def bucket_tokens(sessions: async_sessionmaker[AsyncSession], organization_id: uuid.UUID) -> float:
    async with sessions() as session:
        bucket = await session.get(JudgeRateBucket, organization_id)
        assert bucket is not None
        return bucket.tokens


async def test_concurrent_takes_each_get_their_own_slot(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """60 calls a minute: a full bucket holds 15. Twenty callers at once,
    each on its own connection: fifteen go now, the other five each own a
    distinct later slot, one second apart."""
    organization_id = await new_organization(session_factory)
    statements = autocommit_sessions(session_factory)

    async def take() -> float:
        async with statements() as session:
            return await take_rate_token(session, organization_id, per_minute=60)

    waits = sorted(await asyncio.gather(*(take() for _ in range(20))))
    assert waits[:15] == [0.0] * 15
    # The bucket refills at one token a second while the takes run.
    assert waits[15:] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0], abs=0.5)
    assert len(set(waits[15:])) == 5
    assert await bucket_tokens(session_factory, organization_id) == pytest.approx(-5.0, abs=0.5)


async def test_an_idle_bucket_refills_up_to_its_capacity(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    organization_id = await new_organization(session_factory)
    statements = autocommit_sessions(session_factory)
    async with statements() as session:  # 12 a minute: a bucket of 3, a token every 5 s
        waits = [await take_rate_token(session, organization_id, per_minute=12) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(5.0, abs=0.1)
    assert await bucket_tokens(session_factory, organization_id) == pytest.approx(-1.0, abs=0.1)

    # A minute later the bucket is full again, never fuller than its capacity.
    async with session_factory() as session, session.begin():
        await session.execute(
            update(JudgeRateBucket)
            .where(JudgeRateBucket.organization_id == organization_id)
            .values(updated_at=JudgeRateBucket.updated_at - dt.timedelta(minutes=1))
        )
    async with statements() as session:
        assert await take_rate_token(session, organization_id, per_minute=12) == 0.0
    assert await bucket_tokens(session_factory, organization_id) == pytest.approx(2.0, abs=0.01)
