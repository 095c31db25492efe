"""`aegis dev` as a user runs it: a subprocess that starts everything and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.embedded import free_port, port_is_open

PROJECT_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def start_dev(home: Path, api_port: int, temporal_port: int, ui_port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    env |= {
        "AEGIS_HOME": str(home),
        "AEGIS_API_PORT": str(api_port),
        "AEGIS_DEV_TEMPORAL_PORT": str(temporal_port),
        "AEGIS_DEV_TEMPORAL_UI_PORT": str(ui_port),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "dev"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_running(process: subprocess.Popen[str], timeout: float = 90.0) -> str:
    """Read output until the banner; the banner is printed once the API answers."""
    assert process.stdout is not None
    output = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        output.append(line)
        if "Press Ctrl-C to stop." in line:
            return "".join(output)
    process.kill()
    raise AssertionError("aegis dev did not come up:\n" + "".join(output))


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


def test_dev_runs_the_walkthrough_and_stops_cleanly(tmp_path: Path) -> None:
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    process = start_dev(tmp_path / "home", api_port, temporal_port, ui_port)
    try:
        banner = wait_until_running(process)
        assert f"http://localhost:{ui_port}" in banner
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/health/ready").status_code == 200
            org = client.post("/api/v1/organizations", json={"name": "Test Org", "email": "test@example.com"})
            assert org.status_code == 201
            headers = {"Authorization": f"Bearer {org.json()['api_key']}"}
            accepted = client.post(
                "/api/v1/traces",
                headers=headers,
                json={"model": "gpt-4", "input": "What is 2+2?", "output": "4", "domain": "healthcare"},
            )
            assert accepted.status_code == 202
            trace_id = accepted.json()["trace_id"]
            deadline = time.monotonic() + 30
            while (evaluation := client.get(f"/api/v1/evaluations/{trace_id}", headers=headers).json())[
                "status"
            ] != "completed":
                assert time.monotonic() < deadline, evaluation
                time.sleep(0.2)
            assert evaluation["passed"] is True
            # The Temporal web UI is served.
            assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
    finally:
        code = stop(process)
    assert code == 0
    for port in (api_port, temporal_port, ui_port):
        assert not port_is_open("127.0.0.1", port), f"port {port} still open after stop"

    # A second run reuses the data: the key and the trace are still there.
    process = start_dev(tmp_path / "home", api_port, temporal_port, ui_port)
    try:
        wait_until_running(process)
        response = httpx.get(f"{base}/api/v1/traces/{trace_id}", headers=headers, timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "completed"
    finally:
        assert stop(process) == 0
