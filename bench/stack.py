"""The platform as benchmarks run it: real processes on loopback.

``Stack`` starts what is not given: an embedded PostgreSQL (in a temporary
folder) and a Temporal dev server (in memory), applies the migrations, then
starts ``aegis api`` and as many ``aegis worker`` processes as asked, each as
production runs them. Pass ``database_url`` / ``temporal_address`` to measure
against servers of your own. With ``temporal_apart`` the Temporal server
runs on a CPU of its own and everything else on the other CPUs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from core.embedded import (
    EmbeddedPostgres,
    free_port,
    temporal_dev_server_command,
    wait_for_http,
    wait_for_temporal,
)
from core.migrations import upgrade_database
from core.secrets import new_secret_key
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (and its children, e.g. uvicorn's) in MB, from /proc."""
    total = 0
    for candidate in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return round(total / 1024, 1)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, from the
    state (field 3 of stat(5)) on; None when the process has gone (before
    the file was opened, or while it was read: ESRCH)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, its live children and the
    children it has waited for (PostgreSQL's backends), from /proc."""
    total = 0.0
    for candidate in [pid, *_children(pid)]:
        fields = stat_fields(candidate)
        if fields is not None:
            # utime, stime, cutime, cstime: fields 14-17 of stat(5).
            total += sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    return total


def run_queue_seconds(pid: int) -> float:
    """Time the threads of a process and of its live children spent ready
    to run while no core was free for them (the second field of
    ``/proc/<pid>/task/<tid>/schedstat``). Unlike CPU time, a thread's
    share leaves with it when it exits."""
    total = 0
    for candidate in [pid, *_children(pid)]:
        for task in Path(f"/proc/{candidate}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except OSError:  # the thread or process has gone meanwhile
                continue
    return total / 1e9


class CpuMeter:
    """CPU seconds each named process spent between ``start()`` and
    ``stop()``, and the seconds its threads waited for a core, summed over
    every such pair."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._started: dict[str, tuple[float, float]] = {}
        self.spent: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.waited: dict[str, float] = dict.fromkeys(pids, 0.0)

    def start(self) -> None:
        self._started = {name: (cpu_seconds(pid), run_queue_seconds(pid)) for name, pid in self.pids.items()}

    def stop(self) -> None:
        for name, pid in self.pids.items():
            spent, waited = self._started[name]
            self.spent[name] += cpu_seconds(pid) - spent
            self.waited[name] += run_queue_seconds(pid) - waited

    def per_item_ms(self, items: int) -> dict[str, float]:
        return _per_item_ms(self.spent, items)

    def waited_per_item_ms(self, items: int) -> dict[str, float]:
        return _per_item_ms(self.waited, items)


def _per_item_ms(seconds: dict[str, float], items: int) -> dict[str, float]:
    return {name: round(1000 * value / items, 1) for name, value in seconds.items()}


def split_cpus(available: set[int]) -> tuple[set[int], set[int]]:
    """One CPU for the Temporal server and the rest for everything else,
    as in a deployment where Temporal runs apart from Aegis."""
    cpus = sorted(available)
    if len(cpus) < 2:
        raise ValueError("keeping the Temporal server apart needs at least two CPUs")
    return {cpus[0]}, set(cpus[1:])


def pin_process(cpus: set[int]) -> None:
    """Every thread of this process onto ``cpus`` (threads started later and
    processes started later inherit them)."""
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def popen_on_cpus(command: list[str], cpus: set[int] | None, **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` whose process runs on ``cpus`` (None: this thread's).

    The child inherits the CPUs of the thread that forks it, so this thread
    moves to ``cpus`` for the fork and back after it: every thread of the
    child, the Go runtime's included, starts on them.
    """
    if cpus is None:
        return subprocess.Popen(command, **options)
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return subprocess.Popen(command, **options)
    finally:
        os.sched_setaffinity(0, own)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@dataclass
class Stack:
    workers: int = 1
    database_url: str | None = None
    temporal_address: str | None = None
    api_processes: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    # The Temporal server it starts on a CPU of its own, and everything else
    # (this process, PostgreSQL, the API, the workers) on the other CPUs.
    temporal_apart: bool = False

    api_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _postgres: EmbeddedPostgres | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _temporal_cpus: set[int] | None = None
    _own_cpus: set[int] | None = None

    def __enter__(self) -> Stack:
        # A benchmark stopped with SIGTERM (kill, a CI timeout) unwinds like
        # Ctrl-C, so that __exit__ stops the servers it started.
        signal.signal(signal.SIGTERM, _interrupt)
        self._tmp = tempfile.TemporaryDirectory(prefix="aegis-bench-")
        home = Path(self._tmp.name)
        try:
            if self.temporal_apart:
                if self.temporal_address is not None:
                    raise ValueError("the Temporal server can be kept apart only when the stack starts it")
                self._own_cpus = os.sched_getaffinity(0)
                self._temporal_cpus, others = split_cpus(self._own_cpus)
                pin_process(others)
            if self.database_url is None:
                self._postgres = EmbeddedPostgres(home / "pgdata", delete_on_stop=True)
                self.database_url = asyncio.run(self._postgres.ensure_database("aegis"))
            upgrade_database(self.database_url)
            if self.temporal_address is None:
                port = free_port()
                self._start(
                    "temporal",
                    temporal_dev_server_command(db_file=None, port=port, ui_port=None),
                    cpus=self._temporal_cpus,
                )
                self.temporal_address = f"127.0.0.1:{port}"
                asyncio.run(wait_for_temporal(self.temporal_address, "default"))
            api_port = free_port()
            self.api_url = f"http://127.0.0.1:{api_port}"
            # Bytecode caching as Python does by default (some shells turn it
            # off): without it the workflow sandbox compiles the workflow
            # module's source for every evaluation. The image precompiles.
            inherited = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("AEGIS_") and k != "PYTHONDONTWRITEBYTECODE"
            }
            self.env = inherited | {
                "AEGIS_DATABASE_URL": self.database_url,
                "AEGIS_TEMPORAL_ADDRESS": self.temporal_address,
                "AEGIS_ADMIN_TOKEN": ADMIN_TOKEN,
                "AEGIS_API_KEY_PEPPER": "bench-pepper",
                "AEGIS_LOG_LEVEL": "WARNING",
                # A benchmark client is exactly the noisy client the limit is for.
                "AEGIS_API_RATE_LIMIT_PER_MINUTE": "0",
                **self.extra_env,
            }
            api = [sys.executable, "-m", "cli.main", "api", "--port", str(api_port)]
            self._start("api", [*api, "--workers", str(self.api_processes)])
            for number in range(self.workers):
                self.start_worker(number)
            asyncio.run(wait_for_http(f"{self.api_url}/health"))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start_worker(self, number: int) -> None:
        self._start(f"worker-{number}", [sys.executable, "-m", "cli.main", "worker"])

    def start_process(self, name: str, command: list[str], env: dict[str, str]) -> None:
        """Another process with the stack's environment plus ``env``."""
        self._start(name, command, {**self.env, **env})

    def stop(self, name: str) -> None:
        process = self._processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def pid(self, name: str) -> int:
        return self._processes[name].pid

    def server_pids(self) -> dict[str, int]:
        """The Temporal server's and the embedded PostgreSQL's, where the stack started them."""
        pids = {"temporal": self.pid("temporal")} if "temporal" in self._processes else {}
        if self._postgres is not None:
            pids["postgres"] = self._postgres.pid
        return pids

    @property
    def worker_names(self) -> list[str]:
        return [name for name in self._processes if name.startswith("worker-")]

    def _start(
        self, name: str, command: list[str], env: dict[str, str] | None = None, cpus: set[int] | None = None
    ) -> None:
        assert self._tmp is not None
        # Each process's output in the stack's folder; shown if the run fails.
        with (Path(self._tmp.name) / f"{name}.log").open("wb") as log:
            self._processes[name] = popen_on_cpus(
                command,
                cpus,
                cwd=ROOT,
                env=env or self.env or None,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _show_logs(self) -> None:
        assert self._tmp is not None
        for log in sorted(Path(self._tmp.name).glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            if lines:
                print(f"--- last lines of {log.name}", *lines, sep="\n", file=sys.stderr)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and self._tmp is not None:
            self._show_logs()
        # Workers and the API before the servers they use.
        for name in [n for n in self._processes if n != "temporal"] + ["temporal"]:
            if name in self._processes:
                self.stop(name)
        if self._postgres is not None:
            self._postgres.stop()
        if self._own_cpus is not None:
            pin_process(self._own_cpus)
        if self._tmp is not None:
            self._tmp.cleanup()


async def create_organization(api_url: str) -> str:
    """A new organisation's API key."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        response = await client.post(
            "/api/v1/organizations",
            json={"name": f"bench-{uuid.uuid4().hex[:8]}", "email": "bench@example.com"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        response.raise_for_status()
        return str(response.json()["api_key"])


def now() -> float:
    return time.perf_counter()


async def use_fake_judge(api: httpx.AsyncClient, domain: str, model: str, fake_url: str) -> None:
    """Configure the organisation's judge for ``domain`` as ``model`` on the fake provider."""
    response = await api.put(
        f"/api/v1/judge/configs/{domain}",
        json={
            "provider": "openai_compatible",
            "model": model,
            "base_url": f"{fake_url}/v1",
            "api_key": "sk-bench",
            "timeout_seconds": 30,
        },
    )
    response.raise_for_status()


@contextmanager
def migrated_postgres() -> Iterator[str]:
    """An embedded PostgreSQL in a temporary folder, migrated to head, for
    benchmarks that need only a database; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="aegis-bench-") as home:
        postgres = EmbeddedPostgres(Path(home) / "pgdata", delete_on_stop=True)
        try:
            url = asyncio.run(postgres.ensure_database("aegis"))
            upgrade_database(url)
            yield url
        finally:
            postgres.stop()


@asynccontextmanager
async def in_process_api(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The app in this process (over ASGI, no Temporal: it connects lazily)
    with a new organisation; yields a client sending its API key, and its id."""
    from api.app import create_app  # the app is heavy to import; most benchmarks run it as a process

    settings = Settings(
        database_url=database_url,
        temporal_address="127.0.0.1:1",  # never reached
        secret_key=new_secret_key(),
        api_key_pepper="bench",
        allow_signup=True,
        api_rate_limit_per_minute=0,
    )
    app = create_app(settings=settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as api,
    ):
        created = await api.post(
            "/api/v1/organizations", json={"name": "bench", "email": "bench@example.com"}
        )
        created.raise_for_status()
        body = created.json()
        api.headers["Authorization"] = f"Bearer {body['api_key']}"
        yield api, body["organization_id"]
