"""OTLP/HTTP ingestion: spans from the real OpenTelemetry SDK and its OTLP/HTTP
exporter, sent to the API over HTTP, become evaluated traces."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.otlp import map_request
from tests.helpers import LiveApi, OrgClient

pytestmark = pytest.mark.usefixtures("worker")


def record_spans(model: str) -> list[ReadableSpan]:
    """Four LLM calls as three instrumentations report them, an LLM span
    without content, and a span that is not an LLM call."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "triage-bot", "aegis.domain": "healthcare"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o") as span:  # GenAI semantic conventions
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model,
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be careful."}]),
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Max ibuprofen dose?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "Take 4000 mg every hour."}],
                        }
                    ]
                ),
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 9,
                "session.id": "session-1",
                "user.id": "user-1",
            }
        )
    with tracer.start_as_current_span("openai.chat") as span:  # OpenLLMetry's indexed attributes
        span.set_attributes(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": model,
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "What is 2+2?",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "4",
                "gen_ai.usage.prompt_tokens": 5,
                "gen_ai.usage.completion_tokens": 1,
                "aegis.domain": "generic",
            }
        )
    with tracer.start_as_current_span("ChatCompletion") as span:  # OpenInference
        span.set_attributes(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": model,
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "Hello",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "Hi there.",
                "llm.token_count.prompt": 3,
                "llm.token_count.completion": 2,
                "aegis.domain": "generic",
            }
        )
    with tracer.start_as_current_span("chat hidden") as span:  # content capture off
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": model})
    with tracer.start_as_current_span("GET /patients"):  # not an LLM call
        pass
    return list(memory.get_finished_spans())


async def stored(org: OrgClient, model: str) -> list[dict[str, Any]]:
    listed = (await org.get("/api/v1/traces", params={"model": model})).json()["items"]
    return [(await org.get(f"/api/v1/traces/{item['trace_id']}")).json() for item in listed]


async def test_the_otlp_exporter_sends_llm_spans_that_are_evaluated(
    live_api: LiveApi, org: OrgClient
) -> None:
    model = f"otel-model-{uuid.uuid4().hex[:6]}"
    spans = record_spans(model)
    exporter = OTLPSpanExporter(
        endpoint=f"{live_api.url}/v1/traces",
        headers={"Authorization": f"Bearer {org.api_key}"},
        compression=Compression.Gzip,
    )
    assert exporter.export(spans).name == "SUCCESS"
    assert exporter.export(spans).name == "SUCCESS"  # sent again: stored once
    exporter.shutdown()

    traces = {trace["output"]: trace for trace in await stored(org, model)}
    assert set(traces) == {"Take 4000 mg every hour.", "4", "Hi there."}
    semconv = traces["Take 4000 mg every hour."]
    assert semconv["input"] == "system: Be careful.\n\nuser: Max ibuprofen dose?"
    assert (semconv["domain"], semconv["session_id"], semconv["user_id"]) == (
        "healthcare",
        "session-1",
        "user-1",
    )
    assert (semconv["input_tokens"], semconv["output_tokens"]) == (12, 9)
    assert semconv["latency_ms"] is not None and semconv["latency_ms"] >= 0
    otel = semconv["metadata"]["otel"]
    assert (
        otel["service_name"] == "triage-bot"
        and semconv["external_id"] == f"otel-{otel['trace_id']}-{otel['span_id']}"
    )
    assert len(otel["trace_id"]) == 32 and len(otel["span_id"]) == 16
    assert (traces["4"]["input"], traces["4"]["input_tokens"], traces["4"]["domain"]) == (
        "user: What is 2+2?",
        5,
        "generic",
    )
    assert (traces["Hi there."]["input"], traces["Hi there."]["output_tokens"]) == ("user: Hello", 2)

    evaluation = await org.wait_for_evaluation(semconv["trace_id"])
    assert evaluation["passed"] is False  # 4,000 mg an hour: the healthcare pack's dose rules


async def test_partial_success_names_why_spans_were_rejected_in_both_encodings(
    live_api: LiveApi, org: OrgClient
) -> None:
    model = f"otel-partial-{uuid.uuid4().hex[:6]}"
    request = encode_spans(record_spans(model))
    headers = {"Authorization": f"Bearer {org.api_key}"}
    async with httpx.AsyncClient(base_url=live_api.url, headers=headers) as client:
        as_protobuf = await client.post(
            "/v1/traces",
            content=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert as_protobuf.status_code == 200
        answer = ExportTraceServiceResponse.FromString(as_protobuf.content)
        assert answer.partial_success.rejected_spans == 1
        assert "without its prompt or completion" in answer.partial_success.error_message

        # OTLP/JSON: hex ids, camelCase keys; the same spans are found stored already.
        body = {"resourceSpans": [_json_resource_spans(model)]}
        as_json = await client.post(
            "/v1/traces",
            content=gzip.compress(json.dumps(body).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert as_json.status_code == 200 and as_json.json() == {}

    outputs = sorted(trace["output"] for trace in await stored(org, model))
    assert outputs == ["4", "Hi there.", "JSON answer.", "Take 4000 mg every hour."]
    json_trace = next(t for t in await stored(org, model) if t["output"] == "JSON answer.")
    assert json_trace["external_id"] == "otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174"


def _json_resource_spans(model: str) -> dict[str, Any]:
    def kv(key: str, value: Any) -> dict[str, Any]:
        typed = {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}
        return {"key": key, "value": typed}

    return {
        "resource": {"attributes": [kv("service.name", "json-client")]},
        "scopeSpans": [
            {
                "scope": {"name": "manual"},
                "spans": [
                    {
                        "traceId": "5B8EFFF798038103D269B633813FC60C",
                        "spanId": "EEE19B7EC3C1B174",
                        "name": "chat",
                        "kind": 3,
                        "startTimeUnixNano": "1544712660000000000",
                        "endTimeUnixNano": "1544712661000000000",
                        "attributes": [
                            kv("gen_ai.operation.name", "chat"),
                            kv("gen_ai.request.model", model),
                            kv(
                                "gen_ai.input.messages",
                                json.dumps([{"role": "user", "content": "Question?"}]),
                            ),
                            kv(
                                "gen_ai.output.messages",
                                json.dumps([{"role": "assistant", "content": "JSON answer."}]),
                            ),
                            kv("gen_ai.usage.input_tokens", 4),
                        ],
                    }
                ],
            }
        ],
    }


async def test_bad_requests_get_clear_errors(live_api: LiveApi, org: OrgClient) -> None:
    headers = {"Authorization": f"Bearer {org.api_key}"}
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        anonymous = await client.post(
            "/v1/traces", content=b"", headers={"Content-Type": "application/x-protobuf"}
        )
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"
        cases = [
            ({"Content-Type": "text/plain"}, b"hello", 415, "unsupported_media_type"),
            ({"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff", 400, "invalid_otlp"),
            ({"Content-Type": "application/json"}, b"[1, 2]", 400, "invalid_otlp"),
            ({"Content-Type": "application/json"}, b'{"resourceSpans": "nope"}', 400, "invalid_otlp"),
            (
                {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                b"not gzip",
                400,
                "invalid_otlp",
            ),
            (
                {"Content-Type": "application/json", "Content-Encoding": "br"},
                b"{}",
                415,
                "unsupported_encoding",
            ),
            # Nine MiB of spaces gunzip from a few KiB: over AEGIS_MAX_REQUEST_BYTES once inflated.
            (
                {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                gzip.compress(b" " * (9 * 1024 * 1024)),
                413,
                "payload_too_large",
            ),
            (
                {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                gzip.compress(b"{}")[:-4],
                400,
                "invalid_otlp",
            ),
        ]
        for extra, body, status, code in cases:
            response = await client.post("/v1/traces", content=body, headers={**headers, **extra})
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), extra


def test_mapping_ignores_spans_that_are_not_llm_calls() -> None:
    request = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "name": "db",
                                "attributes": [{"key": "db.system", "value": {"stringValue": "postgresql"}}],
                            },
                            {
                                "name": "embed",
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "embeddings"}},
                                    {
                                        "key": "gen_ai.request.model",
                                        "value": {"stringValue": "text-embedding-3"},
                                    },
                                ],
                            },
                        ]
                    }
                ]
            }
        ]
    }
    mapped = map_request(request, from_protobuf=False)
    assert (len(mapped.traces), mapped.ignored, mapped.rejected) == (0, 2, 0)
