"""Workflows stay deterministic and light; no trace text reaches logs or Temporal."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from core.sandbox import workflow_runner
from models.schemas import workflow_id_for
from tests.helpers import OrgClient
from workflows.dispatch_sweep import DispatchPendingTraces
from workflows.evaluate_trace import EvaluateTrace, EvaluateTraceV2

pytestmark = pytest.mark.usefixtures("worker")
ROOT = Path(__file__).resolve().parent.parent
SECRET_OUTPUT = "Jane Roe's SSN is 219-09-9999 and her email is jane.roe@example.org."


def test_workflow_modules_import_no_database_or_llm_sdk() -> None:
    # A fresh interpreter, so nothing imported by other tests hides a leak.
    code = (
        "import sys, workflows.evaluate_trace, workflows.dispatch_sweep, workflows.train_classifier;"
        "names = ('sqlalchemy', 'asyncpg', 'openai', 'anthropic', 'fastapi');"
        "heavy = [m for m in names if m in sys.modules];"
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_workflow_modules_never_rebind_module_globals() -> None:
    # Workers pass every module through the sandbox (core/sandbox.py), so a
    # workflow module's globals are shared by all runs in a process: a run
    # that rebinds one would change what later runs, and their replays, see.
    for path in sorted((ROOT / "workflows").glob("*.py")):
        tree = ast.parse(path.read_text())
        rebinding = [node for node in ast.walk(tree) if isinstance(node, ast.Global | ast.Nonlocal)]
        assert rebinding == [], f"{path.name} rebinds module state at line {rebinding[0].lineno}"


async def test_recorded_histories_replay_deterministically(org: OrgClient, temporal_client: Client) -> None:
    trace_ids = [await org.submit(), await org.submit(domain="healthcare", output=SECRET_OUTPUT)]
    histories = []
    for trace_id in trace_ids:
        await org.wait_for_evaluation(trace_id)
        handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
        histories.append(await handle.fetch_history())
    replayer = Replayer(
        workflows=[EvaluateTrace, EvaluateTraceV2, DispatchPendingTraces],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(pydantic_data_converter),
    )
    for history in histories:
        await replayer.replay_workflow(history)


async def test_trace_text_stays_out_of_history_search_attributes_and_logs(
    org: OrgClient, temporal_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    trace_id = await org.submit(input="Tell me about Jane Roe", output=SECRET_OUTPUT)
    evaluation = await org.wait_for_evaluation(trace_id)
    assert {"pii.ssn", "pii.email"} <= {i["rule_id"] for i in evaluation["issues"]}

    handle = temporal_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
    # Raw event bytes: payloads are stored as the converter's JSON bytes, so
    # text would show here verbatim (to_json would hide it behind base64).
    history = b"".join(event.SerializeToString() for event in (await handle.fetch_history()).events)
    assert trace_id.encode() in history  # the search below does look at the payloads
    description = await handle.describe()
    attributes = str([(p.key.name, p.value) for p in description.typed_search_attributes])
    logs = "\n".join(record.getMessage() for record in caplog.records)
    for needle in ("219-09-9999", "jane.roe@example.org", "Jane Roe"):
        assert needle.encode() not in history
        assert needle not in attributes
        assert needle not in logs
