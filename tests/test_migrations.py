"""The migrations build exactly the schema the ORM describes, and run both ways."""

from __future__ import annotations

import asyncio
import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from alembic import command
from core.migrations import alembic_config
from models.tables import Base


async def _diff(engine: AsyncEngine) -> list:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )


async def test_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    # The session fixture upgraded a fresh database to head.
    assert await _diff(engine) == []


async def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    # A database of its own keeps the shared test database untouched.
    name = f"aegis_migration_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    config = alembic_config(url)
    try:
        await asyncio.to_thread(command.upgrade, config, "head")
        await asyncio.to_thread(command.downgrade, config, "base")
        await asyncio.to_thread(command.upgrade, config, "head")
        check = create_async_engine(url)
        try:
            assert await _diff(check) == []
        finally:
            await check.dispose()
    finally:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


async def _execute(conn: AsyncConnection, statements: str) -> None:
    for statement in statements.split(";"):
        await conn.exec_driver_sql(statement)


async def test_judge_migration_keeps_counts_and_current_results_both_ways(database_url: str) -> None:
    """0002 -> 0003 turns daily counters into hourly ones; 0003 -> 0002 sums
    them back per day and keeps each trace's current result with its issues."""
    name = f"aegis_migration_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    config = alembic_config(url)
    org, trace = uuid.uuid4(), uuid.uuid4()
    db = create_async_engine(url)
    try:
        await asyncio.to_thread(command.upgrade, config, "0002")
        async with db.begin() as conn:
            await _execute(
                conn,
                f"INSERT INTO organizations (id, name, email) VALUES ('{org}', 'o', 'o@example.com');"
                f"INSERT INTO traces (id, organization_id, model, input, output, domain, status) "
                f"VALUES ('{trace}', '{org}', 'm', 'i', 'o', 'generic', 'completed');"
                f"INSERT INTO usage_metrics (id, organization_id, day, metric, value) "
                f"VALUES ('{uuid.uuid4()}', '{org}', '2026-11-01', 'traces_evaluated', 7)",
            )
        await asyncio.to_thread(command.upgrade, config, "0003")
        async with db.begin() as conn:
            row = (
                await conn.exec_driver_sql(
                    "SELECT hour AT TIME ZONE 'UTC', evaluations, tier FROM usage_metrics"
                )
            ).one()
            assert (str(row[0]), row[1], row[2]) == ("2026-11-01 00:00:00", 7, "unknown")
            for hour, count in (("2026-11-02 09:00+00", 2), ("2026-11-02 17:00+00", 3)):
                await conn.exec_driver_sql(
                    f"INSERT INTO usage_metrics (id, organization_id, hour, domain, tier, evaluations) "
                    f"VALUES ('{uuid.uuid4()}', '{org}', '{hour}', 'generic', 'rules', {count})"
                )
            for version, current in ((1, "false"), (2, "true")):
                await _execute(
                    conn,
                    f"INSERT INTO evaluation_results (id, organization_id, trace_id, version, current, "
                    f"domain, passed, severity, decided_by, tiers, workflow_id) VALUES "
                    f"('{uuid.uuid4()}', '{org}', '{trace}', {version}, {current}, "
                    "'generic', true, 'none', 'rules', '[]', 'w');"
                    f"INSERT INTO evaluation_issues (id, organization_id, trace_id, version, tier, ordinal, "
                    f"rule_id, category, severity, message, spans) VALUES ('{uuid.uuid4()}', '{org}', "
                    f"'{trace}', {version}, 1, 0, 'r.v{version}', 'c', 'low', 'm', '[]')",
                )
        await asyncio.to_thread(command.downgrade, config, "0002")
        async with db.begin() as conn:
            daily = (
                await conn.exec_driver_sql("SELECT day::text, value FROM usage_metrics ORDER BY day")
            ).all()
            assert [tuple(r) for r in daily] == [("2026-11-01", 7), ("2026-11-02", 5)]
            issues = (await conn.exec_driver_sql("SELECT rule_id FROM evaluation_issues")).scalars().all()
            assert issues == ["r.v2"]
            results = (await conn.exec_driver_sql("SELECT count(*) FROM evaluation_results")).scalar()
            assert results == 1
    finally:
        await db.dispose()
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()
