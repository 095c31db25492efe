"""The worker's pool does not check connections before use; a write that
must not fail on a connection PostgreSQL dropped gets a second chance."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import create_engine, create_session_factory, in_transaction
from core.settings import Settings


async def drop_pooled_connection(
    sessions: async_sessionmaker[AsyncSession], admin: async_sessionmaker[AsyncSession]
) -> None:
    """Open the pool's one connection, then have PostgreSQL end its backend."""
    async with sessions() as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
    async with admin() as session:
        assert await session.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_in_transaction_runs_again_on_a_fresh_connection(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    engine = create_engine(
        settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}), pre_ping=False
    )
    sessions = create_session_factory(engine)
    calls = 0

    async def work(session: AsyncSession) -> int:
        nonlocal calls
        calls += 1
        return int(await session.scalar(text("SELECT 41 + 1")))

    try:
        # Without the second chance, the dropped connection fails the work...
        await drop_pooled_connection(sessions, session_factory)
        with pytest.raises(DBAPIError) as raised:
            async with sessions() as session, session.begin():
                await work(session)
        assert raised.value.connection_invalidated

        # ...with it, the work runs once more and succeeds.
        calls = 0
        await drop_pooled_connection(sessions, session_factory)
        assert await in_transaction(sessions, work) == 42
        assert calls in (1, 2)  # 1 if the failure came at BEGIN, before the work ran
    finally:
        await engine.dispose()
