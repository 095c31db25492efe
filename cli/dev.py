"""``aegis dev``: the whole platform on one machine, from pip packages only.

Starts (or reuses, when AEGIS_DATABASE_URL / AEGIS_TEMPORAL_ADDRESS are set)
PostgreSQL and the Temporal dev server, applies migrations, then runs the
API and one worker as child processes. Ctrl-C stops every child; data stays
under AEGIS_HOME for the next run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from core.embedded import (
    EmbeddedPostgres,
    port_is_open,
    temporal_dev_server_command,
    wait_for_http,
    wait_for_temporal,
    wait_for_worker,
)
from core.migrations import upgrade_database
from core.secrets import new_secret_key
from core.settings import Settings

STOP_TIMEOUT_SECONDS = 30.0


class Supervisor:
    """Child processes in their own sessions, so Ctrl-C reaches only us and we stop them in order."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str], log_file: Path | None = None) -> None:
        stdout = open(log_file, "ab") if log_file else None  # noqa: SIM115 - lives as long as the child
        process = subprocess.Popen(
            command,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            start_new_session=True,
        )
        self.children.append((name, process))

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.children:
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop_all(self) -> None:
        # API first (stop accepting), then the worker (finish in-flight tasks), then Temporal.
        for name, process in reversed(self.children):
            if process.poll() is None:
                print(f"  stopping {name}", flush=True)
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def dev_secret(home: Path, name: str, make: Callable[[], str]) -> str:
    """One of the playground's secrets, made on first use and kept with its data."""
    path = home / name
    if not path.exists():
        # Created readable by its owner only, never briefly by others.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(make())
    return path.read_text().strip()


def run_dev(settings: Settings) -> int:
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("AEGIS_ALLOW_SIGNUP", "true")  # local playground: open signup
    env.setdefault("AEGIS_ALLOW_PRIVATE_URLS", "true")  # a local model server or webhook receiver
    if settings.secret_key is None:
        # Encrypts stored provider keys.
        env["AEGIS_SECRET_KEY"] = dev_secret(home, "secret.key", new_secret_key)
    if settings.api_key_pepper is None:
        env["AEGIS_API_KEY_PEPPER"] = dev_secret(home, "api-key-pepper", lambda: secrets.token_urlsafe(32))
    supervisor = Supervisor()
    postgres: EmbeddedPostgres | None = None

    stop_requested = False
    running = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        if not running:
            raise KeyboardInterrupt  # still starting up: abandon start-up, then clean up below

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        database_url = settings.database_url
        if not database_url:
            print(f"Starting PostgreSQL (data in {home / 'pgdata'})", flush=True)
            postgres = EmbeddedPostgres(home / "pgdata")
            database_url = asyncio.run(postgres.ensure_database("aegis"))
        env["AEGIS_DATABASE_URL"] = database_url
        print("Applying migrations", flush=True)
        upgrade_database(database_url)

        temporal_address = settings.temporal_address
        ui_url = "(external Temporal: see its own UI)"
        if not temporal_address:
            port, ui_port = settings.dev_temporal_port, settings.dev_temporal_ui_port
            if port_is_open("127.0.0.1", port):
                print(
                    f"Port {port} is taken: set AEGIS_DEV_TEMPORAL_PORT or AEGIS_TEMPORAL_ADDRESS", flush=True
                )
                return 1
            print("Starting the Temporal dev server", flush=True)
            supervisor.start(
                "temporal",
                temporal_dev_server_command(
                    db_file=home / "temporal.db",
                    port=port,
                    ui_port=ui_port,
                    namespace=settings.temporal_namespace,
                ),
                env,
                log_file=home / "temporal.log",
            )
            temporal_address = f"127.0.0.1:{port}"
            ui_url = f"http://localhost:{ui_port}"
            env.setdefault("AEGIS_TEMPORAL_UI_URL", ui_url)
            asyncio.run(wait_for_temporal(temporal_address, settings.temporal_namespace))
        env["AEGIS_TEMPORAL_ADDRESS"] = temporal_address

        supervisor.start("worker", [sys.executable, "-m", "cli.main", "worker"], env)
        supervisor.start("api", [sys.executable, "-m", "cli.main", "api"], env)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        asyncio.run(wait_for_http(f"{api_url}/health"))
        # The worker starts below the API's priority (AEGIS_WORKER_NICENESS),
        # so it may poll a few seconds after the API answers: only then is
        # a trace sent in the walk-through evaluated at once.
        if settings.worker_queues in ("all", "evaluations"):
            asyncio.run(wait_for_worker(temporal_address, settings.temporal_namespace, settings.task_queue))
        print(
            "\nMetronis Aegis is running:\n"
            f"  API          {api_url}   (OpenAPI docs: {api_url}/docs)\n"
            f"  Temporal UI  {ui_url}\n"
            f"  Temporal     {temporal_address}\n"
            f"  Data         {home}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        running = True
        while not stop_requested:
            exited = supervisor.first_exited()
            if exited:
                print(f"{exited[0]} exited with code {exited[1]}; stopping", flush=True)
                return 1
            time.sleep(0.2)
        print("\nStopping", flush=True)
        return 0
    except KeyboardInterrupt:
        print("\nInterrupted during start-up", flush=True)
        return 130
    finally:
        supervisor.stop_all()
        if postgres is not None:
            print("  stopping postgres", flush=True)
            postgres.stop()
