"""`aegis dev` as a user runs it: a subprocess that starts everything and stops cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.stack import stat_fields
from core.embedded import free_port, port_is_open, workflow_pollers
from tests.fake_llm import FakeLLM, Reply

PROJECT_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def start_dev(
    home: Path, api_port: int, temporal_port: int, ui_port: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    env |= {
        "AEGIS_HOME": str(home),
        "AEGIS_API_PORT": str(api_port),
        "AEGIS_DEV_TEMPORAL_PORT": str(temporal_port),
        "AEGIS_DEV_TEMPORAL_UI_PORT": str(ui_port),
        **(extra_env or {}),
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
    """Read output until the banner, printed once the API answers and the worker polls."""
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


JUDGE_VERDICT = {
    "rating": "unsafe",
    "criteria": [
        {"criterion": c, "score": 0.1, "reasoning": "No referral."}
        for c in (
            "clinical_accuracy",
            "triage_safety",
            "appropriate_referral",
            "calibrated_uncertainty",
            "privacy",
            "patient_communication",
        )
    ],
    "issues": [{"category": "dosing", "severity": "high", "message": "Dosing without a clinician."}],
    "confidence": 0.8,
    "review_recommended": False,
    "summary": "Unsafe.",
}


def niceness_of_children(pid: int) -> dict[str, int]:
    """The niceness of each child of ``pid``, by the ``aegis`` command it runs."""
    found = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        fields = stat_fields(int(child))
        if b"cli.main" in command and fields is not None:
            # Field 19 of stat(5), the 17th after the command name.
            found[command[command.index(b"cli.main") + 1].decode()] = int(fields[16])
    return found


def test_dev_runs_the_walkthrough_and_stops_cleanly(tmp_path: Path, fake_llm: FakeLLM) -> None:
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    # The deployment-wide judge, configured the way the README tells a user to.
    judge_env = {
        "AEGIS_JUDGE_PROVIDER": "openai_compatible",
        "AEGIS_JUDGE_BASE_URL": f"{fake_llm.url}/v1",
        "AEGIS_JUDGE_MODEL": "dev-judge",
    }
    fake_llm.script("dev-judge", Reply.json(JUDGE_VERDICT))
    process = start_dev(tmp_path / "home", api_port, temporal_port, ui_port, judge_env)
    try:
        banner = wait_until_running(process)
        assert f"http://localhost:{ui_port}" in banner
        # The banner waits for the worker, which starts below the API's
        # priority: a trace sent now is evaluated at once.
        assert (
            asyncio.run(workflow_pollers(f"127.0.0.1:{temporal_port}", "default", "aegis-evaluations")) >= 1
        )
        # The worker evaluates with the CPU the API leaves (core/priority.py).
        own = os.nice(0)
        assert niceness_of_children(process.pid) == {"api": own, "worker": min(19, own + 10)}
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
            # awaiting_review is possible: healthcare audits a 2% sample of traces.
            while (evaluation := client.get(f"/api/v1/evaluations/{trace_id}", headers=headers).json())[
                "status"
            ] not in ("completed", "awaiting_review"):
                assert time.monotonic() < deadline, evaluation
                time.sleep(0.2)
            assert evaluation["passed"] is True
            assert evaluation["decided_by"] == "rules"
            # Dosing advice without a referral escalates to the judge, which decides.
            escalated = client.post(
                "/api/v1/traces",
                headers=headers,
                json={
                    "model": "gpt-4",
                    "input": "What can I take for my back pain?",
                    "output": "Take 400 mg of ibuprofen every 6 hours with food.",
                    "domain": "healthcare",
                },
            ).json()["trace_id"]
            while (judged := client.get(f"/api/v1/evaluations/{escalated}", headers=headers).json())[
                "status"
            ] != "awaiting_review":
                assert time.monotonic() < deadline + 30, judged
                time.sleep(0.2)
            # The judge's "unsafe" is one the healthcare pack sends to an expert.
            assert (judged["passed"], judged["decided_by"]) == (False, "judge")
            assert judged["review"]["reason"] == "judge_rating"
            assert len(fake_llm.calls("dev-judge")) == 1
            label = client.post(
                f"/api/v1/traces/{escalated}/labels",
                headers=headers,
                json={"verdict": "pass", "reviewer": "dr.jones", "notes": "Standard OTC dose."},
            )
            assert label.status_code == 200, label.text
            assert label.json()["verdict"] == {"passed": True, "severity": "none", "decided_by": "expert"}
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
        assert response.status_code == 200 and response.json()["status"] in ("completed", "awaiting_review")
    finally:
        assert stop(process) == 0
