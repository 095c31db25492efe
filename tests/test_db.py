"""A pooled connection PostgreSQL has closed is replaced before use, without
a round trip; a write that must not fail on a connection that died
unannounced gets a second chance."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import create_engine, create_session_factory, in_transaction
from core.settings import Settings


async def drop_pooled_connection(
    sessions: async_sessionmaker[AsyncSession], admin: async_sessionmaker[AsyncSession]
) -> int:
    """Open the pool's one connection, then have PostgreSQL end its backend; its pid."""
    async with sessions() as session:
        pid = int(await session.scalar(text("SELECT pg_backend_pid()")))
    async with admin() as session:
        assert await session.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    return pid


async def until_gone(admin: async_sessionmaker[AsyncSession], pid: int) -> None:
    """Until the backend has exited, and this loop has had the time to read its goodbye."""
    for _ in range(100):
        async with admin() as session:
            query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            if not await session.scalar(query, {"pid": pid}):
                await asyncio.sleep(0.1)
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"backend {pid} did not exit")


@pytest.mark.parametrize("replace_closed", [True, False])
async def test_a_connection_the_server_closed_is_replaced_before_use(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], replace_closed: bool
) -> None:
    engine = create_engine(
        settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}), replace_closed=replace_closed
    )
    sessions = create_session_factory(engine)
    try:
        dropped = await drop_pooled_connection(sessions, session_factory)
        await until_gone(session_factory, dropped)
        if replace_closed:
            async with sessions() as session:
                assert await session.scalar(text("SELECT pg_backend_pid()")) != dropped
        else:  # the same pool without the check hands out the dead connection
            with pytest.raises(DBAPIError) as raised:
                async with sessions() as session:
                    await session.scalar(text("SELECT pg_backend_pid()"))
            assert raised.value.connection_invalidated
    finally:
        await engine.dispose()


async def test_in_transaction_runs_again_on_a_fresh_connection(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    engine = create_engine(
        settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}), replace_closed=False
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
