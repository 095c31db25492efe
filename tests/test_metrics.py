"""Observability: Prometheus metrics of the API and the workers, and JSON logs.

The session worker runs in the test process, so its counters are read from
prometheus_client's default registry before and after an evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.persist import PersistActivities
from core import metrics
from core.embedded import free_port
from core.logging import JsonFormatter
from core.packs import PackResolver
from core.settings import Settings
from core.temporal import connect
from models.schemas import StatusUpdateInput, TraceStatus
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import OrgClient
from tests.test_judge_e2e import setup_judge, verdict
from tests.test_judge_e2e import submit as submit_judged

ROOT = Path(__file__).resolve().parent.parent


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- API -------------------------------------------------------------------------


async def test_api_metrics_label_requests_by_route_template(api: httpx.AsyncClient, org: OrgClient) -> None:
    trace_id = str(uuid.uuid4())
    template = {"method": "GET", "route": "/api/v1/traces/{trace_id}", "status": "404"}
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    before = sample("aegis_http_request_seconds_count", **template)
    before_unmatched = sample("aegis_http_request_seconds_count", **unmatched)

    assert (await org.get(f"/api/v1/traces/{trace_id}")).status_code == 404
    assert (await api.get(f"/no/such/path/{trace_id}")).status_code == 404

    assert sample("aegis_http_request_seconds_count", **template) == before + 1
    assert sample("aegis_http_request_seconds_count", **unmatched) == before_unmatched + 1
    response = await api.get("/metrics")  # no API key
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'route="/api/v1/traces/{trace_id}"' in text
    # Neither the raw path nor anything of the tenant becomes a label.
    assert trace_id not in text and org.organization_id not in text
    assert "/metrics" not in (await api.get("/openapi.json")).json()["paths"]


async def test_unknown_http_methods_share_one_series(api: httpx.AsyncClient) -> None:
    before = sample("aegis_http_request_seconds_count", method="other", route="/health", status="405")
    await api.request("BREW", "/health")
    assert (
        sample("aegis_http_request_seconds_count", method="other", route="/health", status="405")
        == before + 1
    )


def test_labels_stay_within_fixed_vocabularies() -> None:
    assert metrics.domain_label("Healthcare") == "healthcare"
    assert metrics.domain_label("acme-internal-pack") == "custom"
    assert metrics.tier_label("judge") == "judge" and metrics.tier_label("x") == "other"
    assert metrics.provider_label("anthropic") == "anthropic" and metrics.provider_label("x") == "other"


def test_api_processes_share_their_counters_in_multiprocess_mode(tmp_path: Path) -> None:
    """`aegis api --workers N`: whichever process answers a scrape reports all of them."""
    env = {**os.environ, metrics.MULTIPROCESS_DIR_ENV: str(tmp_path)}
    observe = (
        "from core import metrics;"
        "metrics.http_request(method='GET', route='/health', status=200, seconds=0.01)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", observe], env=env, cwd=ROOT, check=True)
    scrape = "import sys; from core import metrics; sys.stdout.buffer.write(metrics.exposition())"
    text = subprocess.run(
        [sys.executable, "-c", scrape], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert 'aegis_http_request_seconds_count{method="GET",route="/health",status="200"} 2.0' in text


# --- worker counters -------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_evaluations_are_counted_by_outcome_tier_and_domain(org: OrgClient) -> None:
    passed = {"outcome": "passed", "decided_by_tier": "rules", "domain": "healthcare"}
    failed = {"outcome": "failed", "decided_by_tier": "rules", "domain": "healthcare"}
    before_passed = sample("aegis_evaluations_total", **passed)
    before_failed = sample("aegis_evaluations_total", **failed)

    ok = await org.submit(domain="healthcare", input="What is 2+2?", output="4")
    overdose = await org.submit(
        domain="healthcare",
        input="How much Tylenol can I take for my headache?",
        output="You can take 1000 mg of Tylenol every 3 hours until the pain stops.",
    )
    assert (await org.wait_for_evaluation(ok))["decided_by"] == "rules"
    assert (await org.wait_for_evaluation(overdose))["passed"] is False

    assert sample("aegis_evaluations_total", **passed) >= before_passed + 1
    assert sample("aegis_evaluations_total", **failed) >= before_failed + 1


@pytest.mark.usefixtures("worker")
async def test_a_trace_given_up_on_is_counted_once(
    org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    trace_id = await org.submit(domain="legal")
    await org.wait_for_evaluation(trace_id)
    labels = {"outcome": "error", "decided_by_tier": "none", "domain": "legal"}
    before = sample("aegis_evaluations_total", **labels)

    # The activity the workflow runs when it gives up, twice (a retried attempt).
    persist = PersistActivities(session_factory, PackResolver(session_factory))
    task = StatusUpdateInput(trace_id=uuid.UUID(trace_id), status=TraceStatus.FAILED)
    await persist.mark_failed(task)
    await persist.mark_failed(task)

    assert sample("aegis_evaluations_total", **labels) == before + 1
    assert (await org.get(f"/api/v1/evaluations/{trace_id}")).json()["status"] == "failed"


@pytest.mark.usefixtures("worker")
async def test_judge_calls_are_timed_and_costed(org: OrgClient, fake_llm: FakeLLM) -> None:
    provider = {"provider": "openai_compatible"}
    before_calls = sample("aegis_judge_call_seconds_count", outcome="ok", **provider)
    before_input = sample("aegis_judge_tokens_total", direction="input", **provider)
    before_output = sample("aegis_judge_tokens_total", direction="output", **provider)
    before_cost = sample("aegis_judge_cost_usd_total", **provider)
    before_judged = sample(
        "aegis_evaluations_total", outcome="failed", decided_by_tier="judge", domain="custom"
    )

    model = await setup_judge(org, fake_llm)
    fake_llm.script(model, Reply.json(verdict("unsafe"), input_tokens=1000, output_tokens=500))
    evaluation = await org.wait_for_evaluation(await submit_judged(org))
    assert evaluation["decided_by"] == "judge"

    assert sample("aegis_judge_call_seconds_count", outcome="ok", **provider) >= before_calls + 1
    assert sample("aegis_judge_tokens_total", direction="input", **provider) >= before_input + 1000
    assert sample("aegis_judge_tokens_total", direction="output", **provider) >= before_output + 500
    # 1000 and 500 tokens at 1000 and 2000 USD per million.
    assert sample("aegis_judge_cost_usd_total", **provider) >= before_cost + 2.0 - 1e-9
    # An uploaded pack is "custom": its name never becomes a label.
    judged = sample("aegis_evaluations_total", outcome="failed", decided_by_tier="judge", domain="custom")
    assert judged >= before_judged + 1


def test_workflow_modules_do_not_import_prometheus() -> None:
    # Metrics belong to activities: workflow code must stay deterministic.
    code = (
        "import sys, workflows.evaluate_trace, workflows.dispatch_sweep;"
        "print('prometheus_client' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- the worker's endpoint: Aegis's counters and the Temporal SDK's metrics -------------


async def test_worker_endpoint_serves_temporal_sdk_and_aegis_metrics(settings: Settings) -> None:
    sdk_port, port = free_port(), free_port()
    runtime = metrics.temporal_runtime(sdk_port)
    client = await connect(settings, runtime=runtime)
    await client.count_workflows()  # one RPC, counted by the SDK
    server = metrics.start_worker_metrics_server(port, sdk_port)
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            missing = await http.get(f"http://127.0.0.1:{port}/other")
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200 and missing.status_code == 404
    text = response.text
    assert 'temporal_request{namespace="' in text and 'operation="CountWorkflowExecutions"' in text
    assert "# TYPE aegis_evaluations_total counter" in text


# --- JSON logs -------------------------------------------------------------------------


def record(msg: str, args: tuple[object, ...], **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("aegis.test", logging.WARNING, __file__, 1, msg, args, None)
    entry.__dict__.update(extra)
    return entry


def test_json_log_lines_carry_ids_and_nothing_else() -> None:
    trace_id, organization_id = uuid.uuid4(), uuid.uuid4()
    line = JsonFormatter().format(
        record(
            "trace evaluated in %d ms by %s",
            (12, "rules"),
            trace_id=trace_id,
            organization_id=organization_id,
            # Not an id: a careless extra must not reach the line.
            output="Jane Roe's SSN is 219-09-9999",
        )
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "logger", "message", "trace_id", "organization_id"}
    assert entry["message"] == "trace evaluated in 12 ms by rules"
    assert (entry["level"], entry["logger"]) == ("WARNING", "aegis.test")
    assert (entry["trace_id"], entry["organization_id"]) == (str(trace_id), str(organization_id))
    assert "219-09-9999" not in line and "args" not in entry


def test_json_log_lines_take_ids_from_temporal_loggers_and_keep_tracebacks() -> None:
    details = {"workflow_id": "evaluate-1", "workflow_run_id": "run-1", "activity_type": "persist_evaluation"}
    try:
        raise RuntimeError("database unreachable")
    except RuntimeError:
        entry = record("activity failed", (), temporal_activity=details)
        entry.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter().format(entry))
    assert (parsed["workflow_id"], parsed["run_id"]) == ("evaluate-1", "run-1")
    assert "RuntimeError: database unreachable" in parsed["exc"]
