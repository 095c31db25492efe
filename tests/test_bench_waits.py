"""bench.waits: what the API's database sessions wait for, read from PostgreSQL and /proc."""

import asyncio
import os
import uuid

import asyncpg
import pytest

from bench.waits import ON_CPU, ApiSessions, WaitSampler, driver_url, process_state, summarise, wait_name
from core.db import API_APPLICATION_NAME


def test_summarise_counts_wal_flush_waits_and_how_many_were_ready_to_run() -> None:
    samples = [
        ("IO:WalSync", "R"),
        ("IO:WalSync", "R"),
        ("IO:WalSync", "D"),
        ("LWLock:WALWrite", "S"),
        (ON_CPU, "R"),
        ("Lock:transactionid", "S"),
    ]
    summary = summarise(samples)
    assert summary["active_samples"] == 6
    assert summary["wal_flush_pct"] == 66.7  # 4 of 6
    assert summary["wal_flush_ready_to_run_pct"] == 50.0  # 2 of those 4
    assert summary["by_wait_and_state"] == {
        "IO:WalSync R": 2,
        "IO:WalSync D": 1,
        "LWLock:WALWrite S": 1,
        "CPU R": 1,
        "Lock:transactionid S": 1,
    }


def test_summarise_without_samples_has_no_shares() -> None:
    assert summarise([]) == {
        "active_samples": 0,
        "wal_flush_pct": None,
        "wal_flush_ready_to_run_pct": None,
        "by_wait_and_state": {},
    }


async def connect(database_url: str, application_name: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        driver_url(database_url), server_settings={"application_name": application_name}
    )


def test_names() -> None:
    assert wait_name(None, None) == ON_CPU
    assert wait_name("IO", "WalSync") == "IO:WalSync"
    assert process_state(os.getpid()) == "R"  # this process, reading its own state
    assert process_state(2**22 + 1) == "?"  # above the kernel's largest pid
    # The driver's scheme; the rest as given (asyncpg decodes the socket path).
    assert driver_url("postgresql+asyncpg://u:p@/db?host=/run/pg&port=5433") == (
        "postgresql://u:p@/db?host=%2Frun%2Fpg&port=5433"
    )


async def test_sampler_sees_an_api_session_waiting(database_url: str) -> None:
    """An API session asleep in pg_sleep is sampled with that wait, mostly
    asleep; other applications' sessions are not sampled. (A name of its
    own: the suite's in-process API has sessions named like the API's.)"""
    name = f"{API_APPLICATION_NAME}-{uuid.uuid4().hex[:8]}"
    api = await connect(database_url, name)
    other = await connect(database_url, "other")
    try:
        with WaitSampler(database_url, application_name=name) as sampler:
            await asyncio.gather(api.execute("SELECT pg_sleep(0.5)"), other.execute("SELECT pg_sleep(0.5)"))
    finally:
        await api.close()
        await other.close()
    summary = sampler.summary()
    assert summary["ticks"] >= 10
    waits = summary["by_wait_and_state"]
    # Ready to run at times, on a busy machine: woken, waiting for a core.
    assert set(waits) <= {"Timeout:PgSleep S", "Timeout:PgSleep R", "Timeout:PgSleep ?"}, waits
    assert waits.get("Timeout:PgSleep S", 0) + waits.get("Timeout:PgSleep ?", 0) > sum(waits.values()) / 2
    # One session, sampled about every 10 ms for the half second it slept.
    assert 10 <= sum(waits.values()) <= summary["ticks"]


async def test_api_sessions_count_the_cpu_of_the_api_sessions_only(database_url: str) -> None:
    name = f"{API_APPLICATION_NAME}-{uuid.uuid4().hex[:8]}"
    api = await connect(database_url, name)
    other = await connect(database_url, "other")
    busy = "SELECT sum(i) FROM generate_series(1, 3000000) AS i"
    try:
        if process_state(await api.fetchval("SELECT pg_backend_pid()")) == "?":
            pytest.skip("PostgreSQL runs on another machine: its processes are not in /proc here")
        sessions = ApiSessions(database_url, application_name=name)
        await sessions.start()
        await other.fetchval(busy)
        while_other_worked = await sessions.stop(items=1)
        await sessions.start()
        await api.fetchval(busy)
        while_api_worked = await sessions.stop(items=1)
    finally:
        await api.close()
        await other.close()
    # Milliseconds: summing three million numbers takes tens of them.
    assert while_other_worked["cpu"] < 5
    assert while_api_worked["cpu"] >= 20


def test_sampler_reports_its_failure() -> None:
    with (
        pytest.raises(RuntimeError, match="sampler failed"),
        WaitSampler("postgresql+asyncpg://nobody@/x?host=/nonexistent"),
    ):
        pass
