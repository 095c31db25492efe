"""OpenTelemetry spans of LLM calls, as Aegis traces.

Two conventions are read, whichever a span follows:

- OpenTelemetry GenAI semantic conventions (``gen_ai.*``): the model
  (``gen_ai.response.model``, else ``gen_ai.request.model``), tokens
  (``gen_ai.usage.input_tokens`` / ``output_tokens``, or the older
  ``prompt_tokens`` / ``completion_tokens``), and the messages from
  ``gen_ai.system_instructions`` / ``gen_ai.input.messages`` /
  ``gen_ai.output.messages`` (JSON), the indexed
  ``gen_ai.prompt.N.role|content`` / ``gen_ai.completion.N.*`` attributes
  (OpenLLMetry), or the ``gen_ai.content.prompt`` / ``completion`` events.
  A span counts when ``gen_ai.operation.name`` is ``chat``,
  ``text_completion`` or ``generate_content``, or when it has none but
  names a model.
- OpenInference (``openinference.span.kind`` = ``LLM``): ``llm.model_name``,
  ``llm.input_messages.N.message.role|content``,
  ``llm.output_messages.N.*`` (else ``input.value`` / ``output.value``) and
  ``llm.token_count.prompt|completion``.

Every other span is ignored. The domain comes from ``aegis.domain`` on the
span or its resource (default ``generic``); ``session.id`` (or
``gen_ai.conversation.id``) and ``user.id`` (or ``enduser.id``) are kept;
the span's trace and span ids make its ``external_id``, so an exporter that
sends a span twice stores it once. An LLM span without its prompt or
completion (content capture is off by default in most instrumentations) is
rejected with the reason, never stored half.

This module is pure: OTLP as a dict in (the JSON encoding, or protobuf
turned into it), traces and rejections out.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from models.schemas import TraceIn

GENAI_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
DEFAULT_DOMAIN = "generic"


@dataclass
class MappedRequest:
    traces: list[TraceIn] = field(default_factory=list)
    ignored: int = 0  # not LLM calls
    rejected: int = 0  # LLM calls that cannot be stored
    reasons: list[str] = field(default_factory=list)  # why, once each; never span content


def value_of(any_value: dict[str, Any]) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])
    if "arrayValue" in any_value:
        return [value_of(v) for v in any_value["arrayValue"].get("values", [])]
    if "kvlistValue" in any_value:
        return attributes(any_value["kvlistValue"].get("values", []))
    if "bytesValue" in any_value:
        return any_value["bytesValue"]
    return None


def attributes(key_values: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: value_of(kv.get("value", {})) for kv in key_values if "key" in kv}


def hex_id(value: str, *, from_protobuf: bool) -> str:
    """Trace and span ids: hex in OTLP/JSON, base64 once protobuf is turned into a dict."""
    return base64.b64decode(value).hex() if from_protobuf and value else value.lower()


def _content_text(content: Any) -> str:
    """Message content: a string, or parts/blocks of which the text ones count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("content", part.get("text"))
                texts.append(text if isinstance(text, str) else f"[{part.get('type', 'part')}]")
            else:
                texts.append(str(part))
        return "\n".join(texts)
    return json.dumps(content)


def _render(messages: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"{role}: {text}" if role else text for role, text in messages)


def _loads(raw: Any) -> Any:
    """Attributes carry structures as JSON strings; a string that is not JSON stays text."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _json_messages(raw: Any) -> list[tuple[str, str]]:
    """GenAI JSON messages: ``[{"role", "parts": [...]}]`` or ``[{"role", "content"}]``."""
    raw = _loads(raw)
    if isinstance(raw, str):
        return [("", raw)]
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        return []
    messages = []
    for message in raw:
        if isinstance(message, dict):
            content = message.get("parts", message.get("content"))
            messages.append((str(message.get("role", "")), _content_text(content)))
    return messages


def _indexed(attrs: dict[str, Any], prefix: str, role: str, content: str) -> list[tuple[str, str]]:
    """``prefix.N.role`` / ``prefix.N.content`` attributes, in N order."""
    numbers = sorted(
        {
            int(key[len(prefix) :].split(".")[0])
            for key in attrs
            if key.startswith(prefix) and key[len(prefix) :].split(".")[0].isdigit()
        }
    )
    messages = []
    for n in numbers:
        text = attrs.get(f"{prefix}{n}.{content}")
        if text is not None:
            messages.append((str(attrs.get(f"{prefix}{n}.{role}", "")), _content_text(text)))
    return messages


def _event(span: dict[str, Any], name: str, key: str) -> Any:
    for event in span.get("events", []):
        if event.get("name") == name:
            return attributes(event.get("attributes", [])).get(key)
    return None


def _genai_messages(attrs: dict[str, Any], span: dict[str, Any]) -> tuple[str, str]:
    prompt: list[tuple[str, str]] = []
    if "gen_ai.system_instructions" in attrs:
        prompt.append(("system", _content_text(_loads(attrs["gen_ai.system_instructions"]))))
    prompt += (
        _json_messages(attrs["gen_ai.input.messages"])
        if "gen_ai.input.messages" in attrs
        else _indexed(attrs, "gen_ai.prompt.", "role", "content")
        or _json_messages(_event(span, "gen_ai.content.prompt", "gen_ai.prompt"))
    )
    completion = (
        _json_messages(attrs["gen_ai.output.messages"])
        if "gen_ai.output.messages" in attrs
        else _indexed(attrs, "gen_ai.completion.", "role", "content")
        or _json_messages(_event(span, "gen_ai.content.completion", "gen_ai.completion"))
    )
    return _render(prompt), _render([("", text) for _, text in completion])


def _openinference_messages(attrs: dict[str, Any]) -> tuple[str, str]:
    prompt = _indexed(attrs, "llm.input_messages.", "message.role", "message.content")
    completion = _indexed(attrs, "llm.output_messages.", "message.role", "message.content")
    input_text = _render(prompt) if prompt else _content_text(attrs.get("input.value"))
    output_text = (
        _render([("", t) for _, t in completion]) if completion else _content_text(attrs.get("output.value"))
    )
    return input_text, output_text


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    return next((attrs[key] for key in keys if attrs.get(key) is not None), None)


def _convention(attrs: dict[str, Any]) -> str | None:
    if attrs.get("openinference.span.kind") == "LLM":
        return "openinference"
    operation = attrs.get("gen_ai.operation.name")
    if operation in GENAI_OPERATIONS:
        return "genai"
    if operation is None and _first(attrs, "gen_ai.request.model", "gen_ai.response.model") is not None:
        return "genai"
    return None


def map_request(request: dict[str, Any], *, from_protobuf: bool) -> MappedRequest:
    """The traces in an ``ExportTraceServiceRequest`` (as a dict)."""
    mapped = MappedRequest()
    for resource_spans in request.get("resourceSpans", []):
        resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                attrs = {**resource, **attributes(span.get("attributes", []))}
                convention = _convention(attrs)
                if convention is None:
                    mapped.ignored += 1
                    continue
                problem = _map_span(mapped, span, attrs, convention, resource, from_protobuf)
                if problem is not None:
                    mapped.rejected += 1
                    if problem not in mapped.reasons:
                        mapped.reasons.append(problem)
    return mapped


def _map_span(
    mapped: MappedRequest,
    span: dict[str, Any],
    attrs: dict[str, Any],
    convention: str,
    resource: dict[str, Any],
    from_protobuf: bool,
) -> str | None:
    """Append the span's trace to ``mapped``; or say why it cannot be stored."""
    if convention == "genai":
        input_text, output_text = _genai_messages(attrs, span)
        model = _first(attrs, "gen_ai.response.model", "gen_ai.request.model")
        tokens = (
            _first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
            _first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        )
        provider = _first(attrs, "gen_ai.provider.name", "gen_ai.system")
    else:
        input_text, output_text = _openinference_messages(attrs)
        model = attrs.get("llm.model_name")
        tokens = (attrs.get("llm.token_count.prompt"), attrs.get("llm.token_count.completion"))
        provider = _first(attrs, "llm.provider", "llm.system")
    if not input_text or not output_text:
        return "an LLM span without its prompt or completion (is content capture on?)"
    trace_id = hex_id(span.get("traceId", ""), from_protobuf=from_protobuf)
    span_id = hex_id(span.get("spanId", ""), from_protobuf=from_protobuf)
    started, ended = int(span.get("startTimeUnixNano", 0)), int(span.get("endTimeUnixNano", 0))
    metadata = {
        "otel": {
            "trace_id": trace_id,
            "span_id": span_id,
            "span_name": span.get("name"),
            "service_name": resource.get("service.name"),
            "convention": convention,
        },
        "provider": provider,
    }
    try:
        trace = TraceIn.model_validate(
            {
                "model": str(model or "unknown"),
                "input": input_text,
                "output": output_text,
                "domain": str(attrs.get("aegis.domain") or DEFAULT_DOMAIN),
                "session_id": _first(attrs, "session.id", "gen_ai.conversation.id"),
                "user_id": _first(attrs, "user.id", "enduser.id"),
                "input_tokens": tokens[0],
                "output_tokens": tokens[1],
                "latency_ms": (ended - started) / 1e6 if ended >= started > 0 else None,
                "metadata": metadata,
                "external_id": f"otel-{trace_id}-{span_id}" if trace_id and span_id else None,
            }
        )
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
        return f"an LLM span with invalid {', '.join(fields)}"
    mapped.traces.append(trace)
    return None
