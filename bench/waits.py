"""What the API's PostgreSQL sessions wait for while a benchmark phase runs.

For a PostgreSQL on this machine (the embedded one), whose server processes
``/proc`` shows:

- ``ApiSessions``: the CPU time of the processes serving the API's sessions
  (``application_name`` ``aegis-api``), and how long they were ready to run
  but had no core, between ``start()`` and ``stop()``;
- ``WaitSampler``: every 10 ms, the wait event of each of those sessions
  that is running a statement, with its process's state: ``R`` running or
  ready to run, ``S`` or ``D`` asleep.

PostgreSQL sets a wait event before a call that may block and clears it
after. A session seen in a WAL flush wait (``IO:WalSync``) in state ``R``
is not waiting for the disk: its flush has returned, or is running on a
core, and the process waits to be scheduled. On two shared cores that is
where the API's commits spend most of their time (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench.stack import cpu_seconds, run_queue_seconds, stat_fields
from core.db import API_APPLICATION_NAME

# A commit waiting for its WAL to reach the disk: its own flush, another
# session's flush it queues behind, or the write before the flush.
WAL_FLUSH_WAITS = frozenset({"IO:WalSync", "IO:WalWrite", "LWLock:WALWrite"})
ON_CPU = "CPU"  # active with no wait event: running, or ready to run

_API_SESSIONS = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
_ACTIVE_API_SESSIONS = (
    "SELECT pid, wait_event_type, wait_event FROM pg_stat_activity "
    "WHERE application_name = $1 AND state = 'active'"
)


def driver_url(database_url: str) -> str:
    """The SQLAlchemy URL as asyncpg takes it."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def process_state(pid: int) -> str:
    """The state letter of a process (``R``, ``S``, ``D``, …); ``?`` when /proc does not show it."""
    fields = stat_fields(pid)
    return fields[0] if fields else "?"


def wait_name(wait_event_type: str | None, wait_event: str | None) -> str:
    return f"{wait_event_type}:{wait_event}" if wait_event_type else ON_CPU


def summarise(samples: list[tuple[str, str]]) -> dict[str, object]:
    """The samples, (wait, process state) of each active API session seen:
    the share in a WAL flush wait, the share of those whose process was
    ready to run, and the count of each (wait, state)."""
    wal = [state for wait, state in samples if wait in WAL_FLUSH_WAITS]
    return {
        "active_samples": len(samples),
        "wal_flush_pct": _pct(len(wal), len(samples)),
        "wal_flush_ready_to_run_pct": _pct(wal.count("R"), len(wal)),
        "by_wait_and_state": dict(Counter(f"{wait} {state}" for wait, state in samples).most_common()),
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


async def api_session_pids(database_url: str, application_name: str = API_APPLICATION_NAME) -> list[int]:
    connection = await asyncpg.connect(driver_url(database_url))
    try:
        return [row["pid"] for row in await connection.fetch(_API_SESSIONS, application_name)]
    finally:
        await connection.close()


class ApiSessions:
    """CPU and run-queue wait of the server processes of the API's sessions.

    A session opened meanwhile counts from its start; one closed meanwhile
    is not counted (the API's pool keeps its connections)."""

    def __init__(self, database_url: str, application_name: str = API_APPLICATION_NAME) -> None:
        self.database_url = database_url
        self.application_name = application_name
        self._started: dict[int, tuple[float, float]] = {}

    async def start(self) -> None:
        pids = await api_session_pids(self.database_url, self.application_name)
        self._started = {pid: _times(pid) for pid in pids}

    async def stop(self, items: int) -> dict[str, float]:
        """Milliseconds per item: on a core, and ready to run without one."""
        cpu = waited = 0.0
        for pid in await api_session_pids(self.database_url, self.application_name):
            spent, queued = _times(pid)
            before = self._started.get(pid, (0.0, 0.0))
            cpu += spent - before[0]
            waited += queued - before[1]
        return {"cpu": round(1000 * cpu / items, 2), "run_queue_wait": round(1000 * waited / items, 2)}


def _times(pid: int) -> tuple[float, float]:
    return cpu_seconds(pid), run_queue_seconds(pid)


class WaitSampler:
    """Samples the API's active sessions every ``interval`` seconds, from
    ``__enter__`` to ``__exit__``, in a process of its own: a thread here
    would take the interpreter lock from the load generator beside it.
    The sampling costs a query and a /proc read per tick, CPU that the
    latencies it runs beside share, so it is opt-in."""

    def __init__(
        self, database_url: str, interval: float = 0.01, application_name: str = API_APPLICATION_NAME
    ) -> None:
        self.samples: list[tuple[str, str]] = []
        self.ticks = 0
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_sample, args=(database_url, interval, application_name, self._stop, sender), daemon=True
        )

    def __enter__(self) -> WaitSampler:
        self._process.start()
        try:
            self._check(self._results.recv())  # sampling from here on
        except BaseException:
            self._process.join()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        try:
            self.ticks, self.samples = self._check(self._results.recv())
        finally:
            self._process.join()

    def summary(self) -> dict[str, object]:
        return {"ticks": self.ticks, **summarise(self.samples)}

    @staticmethod
    def _check(message: tuple[str, Any]) -> Any:
        kind, value = message
        if kind == "error":
            raise RuntimeError(f"the wait sampler failed: {value}")
        return value


def _sample(
    database_url: str, interval: float, application_name: str, stop: Event, results: Connection
) -> None:
    """The sampling process: ("ready", None) once connected, then ("done",
    (ticks, samples)) when stopped, or ("error", what) at any point."""
    try:
        sampling = _sampling(database_url, interval, application_name, stop, results)
        results.send(("done", asyncio.run(sampling)))
    except Exception as error:
        results.send(("error", type(error).__name__))


async def _sampling(
    database_url: str, interval: float, application_name: str, stop: Event, results: Connection
) -> tuple[int, list[tuple[str, str]]]:
    connection = await asyncpg.connect(driver_url(database_url))
    results.send(("ready", None))
    samples: list[tuple[str, str]] = []
    ticks = 0
    try:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            tick = loop.time()
            for row in await connection.fetch(_ACTIVE_API_SESSIONS, application_name):
                wait = wait_name(row["wait_event_type"], row["wait_event"])
                samples.append((wait, process_state(row["pid"])))
            ticks += 1
            await asyncio.sleep(max(0.0, interval - (loop.time() - tick)))
    finally:
        await connection.close()
    return ticks, samples
