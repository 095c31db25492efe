"""``wrap_openai`` / ``wrap_anthropic``: every completion a client makes becomes a trace.

    from openai import OpenAI
    from aegis_sdk import wrap_openai

    client = wrap_openai(OpenAI(), domain="healthcare")

The client's ``chat.completions.create`` (OpenAI) or ``messages.create``
(Anthropic) is wrapped on that instance, sync or async, streamed or not.
After each call, the model, the input messages, the output, the token
counts and the latency go to a ``BackgroundSubmitter``: the call's result
is returned untouched and at once, and nothing the wrapper does can make
the call fail. A streamed response is recorded when the caller has read
it to the end (or closes it).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aegis_sdk.submitter import BackgroundSubmitter

log = logging.getLogger("aegis_sdk")
C = TypeVar("C")

_default_submitter: BackgroundSubmitter | None = None


def _submitter(given: BackgroundSubmitter | None) -> BackgroundSubmitter:
    global _default_submitter
    if given is not None:
        return given
    if _default_submitter is None:
        _default_submitter = BackgroundSubmitter()
    return _default_submitter


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """An attribute of an SDK object, or a key of a plain dict."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        kind = _get(block, "type")
        if kind == "text":
            parts.append(_get(block, "text", ""))
        elif kind == "tool_result":
            parts.append(_text(_get(block, "content")))
        elif kind in ("tool_use", "function"):
            parts.append(f"[{kind} {_get(block, 'name', '')}]")
        else:
            parts.append(f"[{kind}]")
    return "\n".join(part for part in parts if part)


def _render(messages: Any, system: Any = None) -> str:
    """The conversation as ``role: text`` paragraphs."""
    lines = [f"system: {_text(system)}"] if system else []
    lines += [f"{_get(m, 'role', 'user')}: {_text(_get(m, 'content'))}" for m in messages or []]
    return "\n\n".join(lines)


class _Recorder:
    """What one call produced, turned into a trace once it is complete."""

    def __init__(self, provider: str, kwargs: dict[str, Any], options: dict[str, Any]) -> None:
        self.provider = provider
        self.kwargs = kwargs
        self.options = options
        self.started = time.perf_counter()
        self.model = kwargs.get("model")
        self.output: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.open_tool_use = False  # inside a streamed tool_use block
        self.sent = False

    def send(self) -> None:
        if self.sent:
            return
        self.sent = True
        try:
            kwargs = self.kwargs
            prompt = (
                _render(kwargs.get("messages"), kwargs.get("system"))
                if self.provider == "anthropic"
                else _render(kwargs.get("messages"))
            )
            metadata = {
                "provider": self.provider,
                "stream": bool(kwargs.get("stream")),
                "finish_reason": self.finish_reason,
                "response_id": self.response_id,
                **self.options.get("metadata", {}),
            }
            trace = {
                "model": str(self.model or "unknown"),
                "input": prompt or "(empty)",
                "output": "".join(self.output) or "(empty)",
                "domain": self.options["domain"],
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
                "metadata": {k: v for k, v in metadata.items() if v is not None},
            }
            for field in ("session_id", "user_id", "application_type"):
                if self.options.get(field) is not None:
                    trace[field] = self.options[field]
            self.options["submitter"].submit(trace)
        except Exception as exc:  # the caller's call succeeded; recording it must not fail it
            log.warning("aegis: a completion was not recorded (%s)", type(exc).__name__)

    # -- OpenAI ------------------------------------------------------------

    def openai_response(self, response: Any) -> None:
        self.model = _get(response, "model") or self.model
        self.response_id = _get(response, "id")
        choices = _get(response, "choices") or []
        if choices:
            message = _get(choices[0], "message")
            self.finish_reason = _get(choices[0], "finish_reason")
            content = _get(message, "content") or _get(message, "refusal")
            calls = _get(message, "tool_calls") or []
            self.output.append(content or "")
            for call in calls:
                function = _get(call, "function")
                self.output.append(f"\n[tool call {_get(function, 'name')}({_get(function, 'arguments')})]")
        self._openai_usage(_get(response, "usage"))

    def openai_chunk(self, chunk: Any) -> None:
        self.model = _get(chunk, "model") or self.model
        self.response_id = _get(chunk, "id") or self.response_id
        for choice in _get(chunk, "choices") or []:
            delta = _get(choice, "delta")
            piece = _get(delta, "content") or _get(delta, "refusal")
            if piece:
                self.output.append(piece)
            self.finish_reason = _get(choice, "finish_reason") or self.finish_reason
        self._openai_usage(_get(chunk, "usage"))

    def _openai_usage(self, usage: Any) -> None:
        if usage is not None:
            self.input_tokens = _get(usage, "prompt_tokens")
            self.output_tokens = _get(usage, "completion_tokens")

    # -- Anthropic ---------------------------------------------------------

    def anthropic_response(self, message: Any) -> None:
        self.model = _get(message, "model") or self.model
        self.response_id = _get(message, "id")
        self.finish_reason = _get(message, "stop_reason")
        for block in _get(message, "content") or []:
            if _get(block, "type") == "text":
                self.output.append(_get(block, "text", ""))
            elif _get(block, "type") == "tool_use":
                self.output.append(f"[tool use {_get(block, 'name')}({json.dumps(_get(block, 'input'))})]")
        usage = _get(message, "usage")
        if usage is not None:
            self.input_tokens = _get(usage, "input_tokens")
            self.output_tokens = _get(usage, "output_tokens")

    def anthropic_event(self, event: Any) -> None:
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self.model = _get(message, "model") or self.model
            self.response_id = _get(message, "id")
            self.input_tokens = _get(_get(message, "usage"), "input_tokens")
        elif kind == "content_block_start":
            block = _get(event, "content_block")
            if _get(block, "type") == "tool_use":
                self.output.append(f"[tool use {_get(block, 'name')}(")
                self.open_tool_use = True
        elif kind == "content_block_delta":
            delta = _get(event, "delta")
            self.output.append(_get(delta, "text") or _get(delta, "partial_json") or "")
        elif kind == "content_block_stop" and self.open_tool_use:
            self.output.append(")]")
            self.open_tool_use = False
        elif kind == "message_delta":
            self.finish_reason = _get(_get(event, "delta"), "stop_reason") or self.finish_reason
            self.output_tokens = _get(_get(event, "usage"), "output_tokens") or self.output_tokens


class _RecordedStream:
    """A provider's sync stream, read through: each item is recorded on its way
    to the caller, and the trace is sent when the stream ends or is closed."""

    def __init__(self, stream: Any, on_item: Callable[[Any], None], recorder: _Recorder) -> None:
        self._stream = stream
        self._iterator = iter(stream)
        self._on_item = on_item
        self._recorder = recorder

    def __iter__(self) -> _RecordedStream:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._iterator)
        except StopIteration:
            self._recorder.send()
            raise
        _safely(self._on_item, item)
        return item

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._recorder.send()

    def __enter__(self) -> _RecordedStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _RecordedAsyncStream:
    """The same, for a provider's async stream."""

    def __init__(self, stream: Any, on_item: Callable[[Any], None], recorder: _Recorder) -> None:
        self._stream = stream
        self._iterator = stream.__aiter__()
        self._on_item = on_item
        self._recorder = recorder

    def __aiter__(self) -> _RecordedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._recorder.send()
            raise
        _safely(self._on_item, item)
        return item

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._recorder.send()

    async def __aenter__(self) -> _RecordedAsyncStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _safely(record: Callable[[Any], None], item: Any) -> None:
    try:
        record(item)
    except Exception as exc:
        log.warning("aegis: could not read a streamed item (%s)", type(exc).__name__)


def _wrap_method(owner: Any, name: str, provider: str, options: dict[str, Any]) -> None:
    original = getattr(owner, name)
    if getattr(original, "__aegis_wrapped__", False):
        return  # wrapped before: one trace per call, not two

    def finish(result: Any, recorder: _Recorder) -> Any:
        streamed = recorder.kwargs.get("stream")
        on_item = recorder.openai_chunk if provider == "openai" else recorder.anthropic_event
        if streamed and hasattr(result, "__aiter__"):
            return _RecordedAsyncStream(result, on_item, recorder)
        if streamed and hasattr(result, "__iter__"):
            return _RecordedStream(result, on_item, recorder)
        _safely(recorder.openai_response if provider == "openai" else recorder.anthropic_response, result)
        recorder.send()
        return result

    async def finish_async(pending: Any, recorder: _Recorder) -> Any:
        return finish(await pending, recorder)

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        recorder = _Recorder(provider, kwargs, options)
        result = original(*args, **kwargs)
        if inspect.isawaitable(result):  # an async client: record once it is awaited
            return finish_async(result, recorder)
        return finish(result, recorder)

    create.__aegis_wrapped__ = True  # type: ignore[attr-defined]
    setattr(owner, name, create)


def _options(
    submitter: BackgroundSubmitter | None,
    domain: str,
    metadata: Mapping[str, Any] | None,
    session_id: str | None,
    user_id: str | None,
    application_type: str | None,
) -> dict[str, Any]:
    return {
        "submitter": _submitter(submitter),
        "domain": domain,
        "metadata": dict(metadata or {}),
        "session_id": session_id,
        "user_id": user_id,
        "application_type": application_type,
    }


def wrap_openai(
    client: C,
    *,
    submitter: BackgroundSubmitter | None = None,
    domain: str = "generic",
    metadata: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    application_type: str | None = None,
) -> C:
    """Record every ``client.chat.completions.create`` call (``OpenAI`` or
    ``AsyncOpenAI``, or any OpenAI-compatible client built on them) as a trace.
    Returns the same client. ``submitter`` defaults to one shared
    ``BackgroundSubmitter`` configured from the environment."""
    options = _options(submitter, domain, metadata, session_id, user_id, application_type)
    _wrap_method(client.chat.completions, "create", "openai", options)  # type: ignore[attr-defined]
    return client


def wrap_anthropic(
    client: C,
    *,
    submitter: BackgroundSubmitter | None = None,
    domain: str = "generic",
    metadata: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    application_type: str | None = None,
) -> C:
    """Record every ``client.messages.create`` call (``Anthropic`` or
    ``AsyncAnthropic``) as a trace. Returns the same client."""
    options = _options(submitter, domain, metadata, session_id, user_id, application_type)
    _wrap_method(client.messages, "create", "anthropic", options)  # type: ignore[attr-defined]
    return client
