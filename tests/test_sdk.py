"""The Python SDK (sdk/aegis_sdk) against the real API served over HTTP, and
its OpenAI / Anthropic wrappers around the real provider SDKs pointed at
the fake provider server."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from aegis_sdk import (
    AegisAPIError,
    AegisClient,
    AsyncAegisClient,
    BackgroundSubmitter,
    Trace,
    wrap_anthropic,
    wrap_openai,
)
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import Answer, LiveApi, OrgClient, RecordingServer

pytestmark = pytest.mark.usefixtures("worker")

SDK = Path(__file__).resolve().parent.parent / "sdk"


@pytest.fixture
def client(live_api: LiveApi, org: OrgClient) -> Iterator[AegisClient]:
    with AegisClient(org.api_key, live_api.url) as sdk:
        yield sdk


def run(call: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking SDK call, off the test's event loop (the worker runs on it)."""
    return asyncio.to_thread(call, *args, **kwargs)


# -- the clients -------------------------------------------------------------


async def test_client_submits_waits_lists_and_labels(client: AegisClient) -> None:
    accepted = await run(
        client.submit,
        Trace(
            model="gpt-4o",
            input="Patient asks about ibuprofen",
            output="My SSN is 219-09-9999.",
            domain="generic",
        ),
    )
    assert accepted.status in ("pending_dispatch", "queued")
    evaluation = await run(client.wait_for_evaluation, accepted.trace_id, timeout=60)
    assert evaluation.final and evaluation.passed is False
    assert "pii.ssn" in {issue.rule_id for issue in evaluation.issues}

    listed = await run(lambda: list(client.iter_traces(model="gpt-4o")))
    assert [trace.trace_id for trace in listed] == [accepted.trace_id]
    searched = await run(client.list_traces, q="ibuprofen")
    assert [trace.trace_id for trace in searched.items] == [accepted.trace_id]

    labelled = await run(client.label, accepted.trace_id, "pass", reviewer="dr.sdk", notes="test data")
    assert (labelled.verdict.passed, labelled.verdict.decided_by, labelled.changed) == (True, "expert", True)
    assert (await run(client.get_evaluation, accepted.trace_id)).decided_by == "expert"


async def test_client_errors_name_the_field_and_are_not_retried(client: AegisClient) -> None:
    with pytest.raises(AegisAPIError) as invalid:
        await run(client.submit, {"model": "", "input": "i", "output": "x", "domain": "generic"})
    assert invalid.value.status_code == 422 and invalid.value.code == "validation_error"
    assert "model" in json.dumps(invalid.value.details)
    with pytest.raises(AegisAPIError) as missing:
        await run(client.get_evaluation, uuid.uuid4())
    assert (missing.value.status_code, missing.value.code) == (404, "not_found")
    with pytest.raises(ValueError, match="extra"):
        Trace.model_validate({"model": "m", "input": "i", "output": "o", "colour": "red"})


async def test_async_client_submits_a_batch_and_resubmitting_stores_nothing_twice(
    live_api: LiveApi, org: OrgClient
) -> None:
    traces = [
        Trace(model="batch-model", input=f"question {n}", output="4", external_id=f"b-{n}") for n in range(3)
    ]
    async with AsyncAegisClient(org.api_key, live_api.url) as sdk:
        first = await sdk.submit_batch([*traces, {"model": "", "input": "i", "output": "o"}])
        assert (first.accepted, first.rejected) == (3, 1)
        assert first.results[3].errors and first.results[3].errors[0]["field"].endswith("model")
        again = await sdk.submit_batch(traces)
        assert [item.duplicate for item in again.results] == [True, True, True]
        assert [item.trace_id for item in again.results] == [item.trace_id for item in first.results[:3]]
        evaluation = await sdk.wait_for_evaluation(first.results[0].trace_id, timeout=60)
        assert evaluation.passed is True
        listed = [trace async for trace in sdk.iter_traces(model="batch-model", limit=2)]
        assert len(listed) == 3


def scripted_server(*answers: tuple[int, dict[str, str], dict[str, Any]]) -> RecordingServer:
    """A server giving the scripted JSON answers in order."""
    script = list(answers)

    def answer(path: str, body: bytes) -> Answer:
        status, headers, payload = script.pop(0)
        return status, {**headers, "Content-Type": "application/json"}, json.dumps(payload).encode()

    return RecordingServer(answer)


def test_retries_honour_retry_after_and_resend_the_same_external_id() -> None:
    busy = {"error": {"code": "rate_limited", "message": "slow down", "details": None}}
    down = {"error": {"code": "unavailable", "message": "database unavailable", "details": None}}
    ok = {"trace_id": str(uuid.uuid4()), "status": "pending_dispatch", "duplicate": False}
    server = scripted_server((429, {"Retry-After": "0.3"}, busy), (503, {}, down), (202, {}, ok))
    try:
        with AegisClient("key", server.url, backoff_seconds=0.05) as sdk:
            accepted = sdk.submit({"model": "m", "input": "i", "output": "o"})
    finally:
        server.close()
    assert str(accepted.trace_id) == ok["trace_id"]
    first, second, _ = server.requests
    assert second["at"] - first["at"] >= 0.3  # as Retry-After asked
    external_ids = {json.loads(request["body"])["external_id"] for request in server.requests}
    assert len(external_ids) == 1 and external_ids.pop().startswith("sdk-")


def test_a_label_is_not_resent_after_a_server_error() -> None:
    down = {"error": {"code": "internal_error", "message": "internal error", "details": None}}
    server = scripted_server((500, {}, down), (500, {}, down))
    try:
        with AegisClient("key", server.url, backoff_seconds=0.01) as sdk, pytest.raises(AegisAPIError):
            sdk.label(uuid.uuid4(), "fail", reviewer="dr.x")
    finally:
        server.close()
    assert len(server.requests) == 1


# -- the background submitter -------------------------------------------------


async def test_background_submitter_sends_everything_in_batches(live_api: LiveApi, org: OrgClient) -> None:
    model = f"bg-{uuid.uuid4().hex[:6]}"
    with AegisClient(org.api_key, live_api.url) as sdk:
        submitter = BackgroundSubmitter(sdk, batch_size=100, flush_interval=0.05)
        began = time.perf_counter()
        queued = [submitter.submit({"model": model, "input": f"q{n}", "output": "a"}) for n in range(250)]
        queued.append(submitter.submit({"model": model, "input": "q", "output": "a", "colour": "red"}))
        elapsed = time.perf_counter() - began
        assert queued == [True] * 250 + [False]  # the invalid one is dropped, not raised
        assert elapsed < 0.5  # queuing only: no I/O on the caller's path
        assert await run(submitter.flush, 30)
        submitter.close()
        assert submitter.stats.accepted == 250 and submitter.stats.dropped == 1
        stored = await run(lambda: sum(1 for _ in sdk.iter_traces(model=model, limit=200)))
    assert stored == 250


def test_background_submitter_never_blocks_and_counts_drops_when_aegis_is_down() -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    sdk = AegisClient("key", url, max_retries=1, backoff_seconds=0.01, timeout=0.5)
    submitter = BackgroundSubmitter(sdk, max_queue=10, batch_size=5, flush_interval=0.01)
    began = time.perf_counter()
    results = [submitter.submit({"model": "m", "input": "i", "output": "o"}) for _ in range(1000)]
    elapsed = time.perf_counter() - began
    assert elapsed < 0.5
    assert results.count(False) == submitter.stats.dropped  # each refusal counted at once
    # Nothing can be sent, so beyond the queue's 10 only what the sending
    # thread took out meanwhile got in: a batch of 5 per failed send, and each
    # failed send waits between its two attempts at least half the 0.01 s
    # backoff (the jitter draws from half to all of it).
    assert results.count(True) <= 10 + 5 * (int(elapsed / 0.005) + 1)
    assert submitter.flush(10)
    submitter.close()
    stats = submitter.stats
    assert stats.accepted == 0 and stats.failed == results.count(True)
    assert stats.failed + stats.dropped == 1000
    assert submitter.submit({"model": "m", "input": "i", "output": "o"}) is False  # closed
    dead.close()


# -- the provider wrappers ------------------------------------------------------


def _submitter(live_api: LiveApi, org: OrgClient) -> BackgroundSubmitter:
    return BackgroundSubmitter(AegisClient(org.api_key, live_api.url), flush_interval=0.05)


async def _stored(live_api: LiveApi, org: OrgClient, model: str, count: int) -> list[dict[str, Any]]:
    """The traces of ``model``, full, once ``count`` are stored and evaluated."""
    async with AsyncAegisClient(org.api_key, live_api.url) as sdk:
        deadline = time.monotonic() + 30
        while len(ids := [t.trace_id async for t in sdk.iter_traces(model=model)]) < count:
            assert time.monotonic() < deadline, ids
            await asyncio.sleep(0.1)
        for trace_id in ids:
            await sdk.wait_for_evaluation(trace_id, timeout=60)
        traces = [(await sdk._http.get(f"/api/v1/traces/{trace_id}")).json() for trace_id in ids]
    return sorted(traces, key=lambda trace: trace["created_at"])


async def test_wrap_openai_records_sync_async_and_streamed_completions(
    live_api: LiveApi, org: OrgClient, fake_llm: FakeLLM
) -> None:
    model = f"wrapped-gpt-{uuid.uuid4().hex[:6]}"
    fake_llm.script(
        model,
        Reply.text("Take 400 mg ibuprofen.", input_tokens=21, output_tokens=7),
        Reply.text("Streamed answer, in pieces.", input_tokens=13, output_tokens=6),
        Reply.text("Async answer."),
        Reply.text("Async streamed answer."),
    )
    submitter = _submitter(live_api, org)
    messages = [{"role": "system", "content": "You are careful."}, {"role": "user", "content": "Dose?"}]
    sync_client = wrap_openai(
        openai.OpenAI(api_key="k", base_url=f"{fake_llm.url}/v1", max_retries=0),
        submitter=submitter,
        domain="healthcare",
        user_id="user-7",
        metadata={"feature": "triage"},
    )
    answer = await run(sync_client.chat.completions.create, model=model, messages=messages)
    assert answer.choices[0].message.content == "Take 400 mg ibuprofen."  # untouched

    def stream() -> str:
        chunks = sync_client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert await run(stream) == "Streamed answer, in pieces."

    async_client = wrap_openai(
        openai.AsyncOpenAI(api_key="k", base_url=f"{fake_llm.url}/v1", max_retries=0),
        submitter=submitter,
        domain="healthcare",
    )
    assert (await async_client.chat.completions.create(model=model, messages=messages)).choices
    pieces = [
        c.choices[0].delta.content or ""
        async for c in await async_client.chat.completions.create(model=model, messages=messages, stream=True)
        if c.choices
    ]
    assert "".join(pieces) == "Async streamed answer."
    assert await run(submitter.flush, 30)

    first, streamed, awaited, async_streamed = await _stored(live_api, org, model, 4)
    assert first["input"] == "system: You are careful.\n\nuser: Dose?"
    assert (first["output"], first["domain"], first["user_id"]) == (
        "Take 400 mg ibuprofen.",
        "healthcare",
        "user-7",
    )
    assert (first["input_tokens"], first["output_tokens"]) == (21, 7)
    assert first["metadata"]["feature"] == "triage" and first["metadata"]["provider"] == "openai"
    assert first["latency_ms"] > 0
    assert streamed["output"] == "Streamed answer, in pieces." and streamed["metadata"]["stream"] is True
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (13, 6)
    assert awaited["output"] == "Async answer."
    assert async_streamed["output"] == "Async streamed answer." and async_streamed["input_tokens"] is None
    submitter.close()


async def test_wrap_anthropic_records_sync_async_and_streamed_messages(
    live_api: LiveApi, org: OrgClient, fake_llm: FakeLLM
) -> None:
    model = f"wrapped-claude-{uuid.uuid4().hex[:6]}"
    fake_llm.script(
        model,
        Reply.text("Claude says hello.", input_tokens=30, output_tokens=4),
        Reply.text("Claude streams hello.", input_tokens=31, output_tokens=5),
        Reply.text("Async Claude."),
        Reply.json({"city": "Paris"}),
    )
    submitter = _submitter(live_api, org)
    request = {
        "model": model,
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    sync_client = wrap_anthropic(
        anthropic.Anthropic(api_key="k", base_url=fake_llm.url, max_retries=0), submitter=submitter
    )
    message = await run(sync_client.messages.create, **request)
    assert message.content[0].text == "Claude says hello."

    def stream() -> str:
        with sync_client.messages.create(**request, stream=True) as events:
            return "".join(e.delta.text for e in events if e.type == "content_block_delta")

    assert await run(stream) == "Claude streams hello."

    async_client = wrap_anthropic(
        anthropic.AsyncAnthropic(api_key="k", base_url=fake_llm.url, max_retries=0), submitter=submitter
    )
    assert (await async_client.messages.create(**request)).content[0].text == "Async Claude."
    tools = [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}]
    events = [e async for e in await async_client.messages.create(**request, tools=tools, stream=True)]
    assert events[-1].type == "message_stop"
    assert await run(submitter.flush, 30)

    first, streamed, awaited, tool = await _stored(live_api, org, model, 4)
    assert first["input"] == "system: Be brief.\n\nuser: Hi"
    assert (first["output"], first["input_tokens"], first["output_tokens"]) == ("Claude says hello.", 30, 4)
    assert first["metadata"]["provider"] == "anthropic" and first["metadata"]["finish_reason"] == "end_turn"
    assert (streamed["output"], streamed["input_tokens"], streamed["output_tokens"]) == (
        "Claude streams hello.",
        31,
        5,
    )
    assert awaited["output"] == "Async Claude."
    assert tool["output"] == '[tool use lookup({"city": "Paris"})]'
    submitter.close()


def test_a_failing_call_is_not_recorded_and_fails_as_before(fake_llm: FakeLLM) -> None:
    model = f"failing-{uuid.uuid4().hex[:6]}"
    fake_llm.script(model, Reply.error(400, message="bad request"))
    dead = BackgroundSubmitter(AegisClient("key", "http://127.0.0.1:9", max_retries=0))
    client = wrap_openai(
        openai.OpenAI(api_key="k", base_url=f"{fake_llm.url}/v1", max_retries=0), submitter=dead
    )
    wrap_openai(client, submitter=dead)  # wrapping twice keeps one wrapper: one trace per call
    assert not getattr(client.chat.completions.create.__wrapped__, "__aegis_wrapped__", False)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert dead.flush(5) and dead.stats.accepted + dead.stats.failed + dead.stats.dropped == 0
    dead.close()


# -- packaging ---------------------------------------------------------------


def test_sdk_installs_alone_with_only_httpx_and_pydantic() -> None:
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    assert sorted(dep.split(">")[0].split("<")[0] for dep in project["dependencies"]) == ["httpx", "pydantic"]
    heavy = ["openai", "anthropic", "temporalio", "sqlalchemy", "fastapi", "api", "core", "models"]
    probe = f"import sys, aegis_sdk; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=SDK, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_a_forked_process_gets_a_submitter_of_its_own() -> None:
    """A server that forks after the wrappers were set up (gunicorn --preload)
    must not inherit a submitter without a thread: the child starts its own."""
    script = """
import os, sys
from aegis_sdk import AegisClient, BackgroundSubmitter
submitter = BackgroundSubmitter(AegisClient("key", "http://127.0.0.1:9", max_retries=0), max_queue=5)
pid = os.fork()
if pid == 0:
    queued = submitter.submit({"model": "m", "input": "i", "output": "o"})
    alive = submitter._thread.is_alive()
    flushed = submitter.flush(10)
    os._exit(0 if (queued, alive, flushed, submitter.stats.failed) == (True, True, True, 1) else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=SDK, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
