"""A scriptable, in-process stand-in for the OpenAI and Anthropic HTTP APIs.

The server speaks just enough of each provider's wire format for the official SDKs to parse
its answers exactly as they parse the real thing:

* OpenAI Chat Completions: ``POST /v1/chat/completions`` (``AsyncOpenAI(base_url=f"{url}/v1")``)
* Anthropic Messages: ``POST /v1/messages`` (``AsyncAnthropic(base_url=url)``)

Both answer ``"stream": true`` requests as server-sent events, as the providers do.

One server is shared by the whole test session (the Temporal worker outlives single tests), so
scripts are keyed by the request's ``model`` field: every test scripts its own unique model name
and can never consume another test's replies::

    fake.script("judge-test-42", Reply.error(429, retry_after=1), Reply.json({"verdict": "pass"}))
    ...
    assert len(fake.calls("judge-test-42")) == 2

It runs under uvicorn in a daemon thread with its own event loop rather than on the test's loop:
the session-scoped pytest-asyncio loop may be blocked by the code under test (a Temporal
activity, a synchronous client), and the fake must keep answering regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import uvicorn

__all__ = ["CONTENT_POLICY", "DEFAULT_TOOL_NAME", "FakeLLM", "RecordedCall", "Reply"]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

# Tool name used for a JSON answer on the Anthropic wire when the request declared no tools.
DEFAULT_TOOL_NAME = "record_verdict"
# The one special error kind: a provider-side content-policy rejection of the request.
CONTENT_POLICY = "content_policy"

Provider = Literal["openai", "anthropic"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_DEFAULT_ERROR_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to use this model.",
    404: "The requested resource was not found.",
    408: "Request timed out.",
    429: "Rate limit reached. Please try again later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout.",
    529: "Overloaded.",
}
_CONTENT_POLICY_MESSAGE = "Your request was rejected as a result of our content policy."


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the classmethods, not the constructor."""

    kind: Literal["json", "text", "refusal", "error"]
    payload: Any = None  # dict for "json", str for "text" / "refusal"
    status: int = 200
    message: str | None = None  # error message
    error_kind: str | None = None  # None, or CONTENT_POLICY
    retry_after: float | None = None  # seconds, sent as the Retry-After header
    delay: float = 0.0  # seconds to wait before answering
    input_tokens: int = 10
    output_tokens: int = 5

    @classmethod
    def json(cls, obj: dict[str, Any], *, input_tokens: int = 10, output_tokens: int = 5) -> Reply:
        """The model answers with ``obj``.

        OpenAI: ``message.content`` is ``json.dumps(obj)``. Anthropic: a ``tool_use`` block whose
        ``input`` is ``obj`` (the forced tool from ``tool_choice``, else the first declared tool, else
        ``DEFAULT_TOOL_NAME``) with ``stop_reason`` ``"tool_use"``.
        """
        if not isinstance(obj, dict):
            raise TypeError("Reply.json takes a dict; use Reply.text for anything else")
        # Serialise now so a non-JSON value fails in the test, not inside the server thread.
        json.dumps(obj)
        return cls("json", obj, input_tokens=input_tokens, output_tokens=output_tokens)

    @classmethod
    def text(cls, s: str, *, input_tokens: int = 10, output_tokens: int = 5) -> Reply:
        """Raw text content (e.g. malformed JSON). Anthropic: a text block, ``stop_reason`` ``"end_turn"``."""
        return cls("text", s, input_tokens=input_tokens, output_tokens=output_tokens)

    @classmethod
    def refusal(cls, s: str, *, input_tokens: int = 10, output_tokens: int = 5) -> Reply:
        """The model declines.

        OpenAI: ``message.refusal`` is ``s`` and ``content`` is null. Anthropic: ``stop_reason``
        ``"refusal"`` with ``s`` in a text block.
        """
        return cls("refusal", s, input_tokens=input_tokens, output_tokens=output_tokens)

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        kind: str | None = None,
    ) -> Reply:
        """An HTTP error in the provider's own error JSON.

        The error type follows from ``status`` (429 rate limit, 401 authentication, 400 invalid
        request, 5xx server error, 529 Anthropic overload, ...). ``kind=CONTENT_POLICY`` (normally
        with status 400) makes it a content-policy rejection: OpenAI code
        ``"content_policy_violation"``, Anthropic ``invalid_request_error`` naming the policy.
        ``retry_after`` adds a ``Retry-After`` header (seconds; fractions allowed, as the SDKs are).
        """
        if not 400 <= status <= 599:
            raise ValueError(f"error status must be 4xx or 5xx, got {status}")
        if kind not in (None, CONTENT_POLICY):
            raise ValueError(f"unknown error kind {kind!r}; the only kind is {CONTENT_POLICY!r}")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        return cls("error", status=status, message=message, error_kind=kind, retry_after=retry_after)

    @classmethod
    def hang(cls, seconds: float, then: Reply | None = None) -> Reply:
        """Wait ``seconds`` before answering with ``then`` (default: ``Reply.json({})``).

        Use it to push a client past its timeout. If the client gives up first the server notices
        the disconnect and drops the request, so a long hang does not outlive the test.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return replace(then if then is not None else cls.json({}), delay=seconds)


@dataclass(frozen=True)
class RecordedCall:
    """A request the server received."""

    path: str
    headers: dict[str, str]  # lowercase names
    body: Any  # the parsed JSON body (None if it was not JSON)
    received_at: float  # time.monotonic()


@dataclass
class _Script:
    replies: list[Reply]
    position: int = 0

    def next(self) -> Reply:
        # The last reply repeats, so "fail twice then succeed" needs no padding for extra retries.
        reply = self.replies[min(self.position, len(self.replies) - 1)]
        self.position += 1
        return reply


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    scripts: dict[str, _Script] = field(default_factory=dict)
    responders: dict[str, Callable[[dict[str, Any]], Reply]] = field(default_factory=dict)
    calls: dict[str, list[RecordedCall]] = field(default_factory=dict)


class FakeLLM:
    """The fake provider server. ``start()``/``stop()``, or use it as a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._state = _State()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._url: str | None = None
        # Owned by the server thread's loop; stop() sets it so hanging requests end at once.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        if self._url is None:
            raise RuntimeError("FakeLLM is not running; call start() first")
        return self._url

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeLLM is already running")
        # Bind before starting the thread: the port is known up front and there is no race
        # between picking a free port and uvicorn binding it.
        sock = socket.create_server((self._host, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            # A bound method defeats uvicorn's ASGI2/3 sniffing; say it outright.
            interface="asgi3",
            proxy_headers=False,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            # Backstop only: stop() already wakes hanging requests.
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=self._run, args=(server, sock), name="fake-llm", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError("FakeLLM server failed to start")
            time.sleep(0.01)
        self._server, self._thread, self._socket = server, thread, sock
        self._url = f"http://{self._host}:{port}"

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            # The loop may close between the check and the call if the server died on its own.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self._url = None
        self._loop = self._stopping = None

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        asyncio.run(self._serve(server, sock))

    async def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        await server.serve(sockets=[sock])

    def __enter__(self) -> FakeLLM:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting

    def script(self, model: str, *replies: Reply) -> None:
        """Replace the script for ``model``; requests consume replies in order, the last repeats."""
        if not replies:
            raise ValueError("script() needs at least one reply")
        with self._state.lock:
            self._state.scripts[model] = _Script(list(replies))

    def respond(self, model: str, responder: Callable[[dict[str, Any]], Reply]) -> None:
        """Answer every request for ``model`` with ``responder(request body)``
        (instead of a script): for benchmarks whose answer depends on the trace."""
        with self._state.lock:
            self._state.responders[model] = responder

    def calls(self, model: str) -> list[RecordedCall]:
        """Requests received for ``model`` so far, oldest first (including unscripted ones)."""
        with self._state.lock:
            return list(self._state.calls.get(model, ()))

    def reset(self) -> None:
        """Forget every script and recorded call."""
        with self._state.lock:
            self._state.scripts.clear()
            self._state.responders.clear()
            self._state.calls.clear()

    def _record(self, model: str, call: RecordedCall) -> Reply | None:
        # Recording and taking the next reply happen under one lock so concurrent requests for
        # the same model consume the script in the order they are recorded.
        with self._state.lock:
            self._state.calls.setdefault(model, []).append(call)
            script = self._state.scripts.get(model)
            responder = self._state.responders.get(model)
            if script is not None:
                return script.next()
        return responder(call.body) if responder is not None else None

    # ------------------------------------------------------------------ ASGI app

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        received_at = time.monotonic()
        raw = await _read_body(receive)
        path: str = scope["path"]
        provider: Provider | None = {OPENAI_PATH: "openai", ANTHROPIC_PATH: "anthropic"}.get(path)
        if provider is None or scope["method"] != "POST":
            body = {"error": {"message": f"FakeLLM does not serve {scope['method']} {path}"}}
            await _send_json(send, 404, body, {})
            return

        try:
            request = json.loads(raw) if raw else None
        except ValueError:
            request = None
        model = request.get("model") if isinstance(request, dict) else None
        if not isinstance(request, dict) or not isinstance(model, str):
            await _send_error(send, provider, 400, "Request body must be a JSON object with a 'model'.")
            return

        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        reply = self._record(model, RecordedCall(path, headers, request, received_at))

        if reply is None:
            # Fail loudly: a test that forgot to script its model should not get a plausible answer.
            message = (
                f"The model '{model}' does not exist or you do not have access to it. "
                "(FakeLLM: no script for this model; call FakeLLM.script() first.)"
            )
            await _send_error(send, provider, 404, message, not_found_model=True)
            return
        if reply.delay > 0:
            assert self._stopping is not None  # set before the server accepts connections
            outcome = await _wait(reply.delay, receive, self._stopping)
            if outcome == "disconnected":
                return  # the client gave up; there is nobody left to answer
            if outcome == "stopping":
                await _send_error(send, provider, 503, "FakeLLM is shutting down.")
                return

        if reply.kind == "error":
            await _send_error(
                send,
                provider,
                reply.status,
                reply.message,
                content_policy=reply.error_kind == CONTENT_POLICY,
                retry_after=reply.retry_after,
            )
        elif request.get("stream"):
            events = (
                _openai_stream(model, request, reply)
                if provider == "openai"
                else _anthropic_stream(model, request, reply)
            )
            await _send_events(send, events, _request_id_header(provider))
        elif provider == "openai":
            await _send_json(send, 200, _openai_completion(model, reply), _request_id_header(provider))
        else:
            body = _anthropic_message(model, request, reply)
            await _send_json(send, 200, body, _request_id_header(provider))


# ---------------------------------------------------------------------- response bodies


def _openai_completion(model: str, reply: Reply) -> dict[str, Any]:
    if reply.kind == "json":
        content, refusal = json.dumps(reply.payload), None
    elif reply.kind == "text":
        content, refusal = reply.payload, None
    else:  # refusal: OpenAI puts it in its own field and leaves content null
        content, refusal = None, reply.payload
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": None,
    }


def _anthropic_tool_name(request: dict[str, Any]) -> str:
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and isinstance(choice.get("name"), str):
        return choice["name"]
    tools = request.get("tools")
    first = tools[0] if isinstance(tools, list) and tools else None
    if isinstance(first, dict) and isinstance(first.get("name"), str):
        return first["name"]
    return DEFAULT_TOOL_NAME


def _anthropic_message(model: str, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    stop_details: dict[str, Any] | None = None
    if reply.kind == "json":
        content: list[dict[str, Any]] = [
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": _anthropic_tool_name(request),
                "input": reply.payload,
            }
        ]
        stop_reason = "tool_use"
    elif reply.kind == "text":
        content, stop_reason = [{"type": "text", "text": reply.payload}], "end_turn"
    else:
        content, stop_reason = [{"type": "text", "text": reply.payload}], "refusal"
        stop_details = {"type": "refusal", "category": None, "explanation": None}
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "stop_details": stop_details,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }


# ---------------------------------------------------------------------- streamed responses
#
# With ``"stream": true`` the answer goes out as server-sent events, the text
# in three pieces so that a client must put it together: OpenAI's
# ``chat.completion.chunk`` objects then ``[DONE]`` (usage in a last chunk
# only when ``stream_options.include_usage`` asks for it), Anthropic's
# message_start ... message_stop events.


def _pieces(text: str) -> list[str]:
    third = max(1, len(text) // 3)
    return [text[:third], text[third : 2 * third], text[2 * third :]] if text else [""]


def _openai_stream(model: str, request: dict[str, Any], reply: Reply) -> list[tuple[str | None, Any]]:
    completion = _openai_completion(model, reply)
    message = completion["choices"][0]["message"]

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> tuple[None, dict[str, Any]]:
        return None, {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    field = "refusal" if message["refusal"] is not None else "content"
    text = message[field] or ""
    events = [chunk({"role": "assistant", field: ""})]
    events += [chunk({field: piece}) for piece in _pieces(text)]
    events.append(chunk({}, "stop"))
    if (request.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**chunk({})[1], "choices": [], "usage": completion["usage"]}))
    events.append((None, "[DONE]"))
    return events


def _anthropic_stream(model: str, request: dict[str, Any], reply: Reply) -> list[tuple[str | None, Any]]:
    message = _anthropic_message(model, request, reply)
    usage = message["usage"]
    started = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": started})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
        else:  # tool_use: its input arrives as pieces of JSON
            empty = {**block, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in _pieces(json.dumps(block["input"]))
            ]
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty})
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            for delta in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _openai_error_type(status: int) -> tuple[str, str | None]:
    """(type, code) the way the OpenAI API labels an error status."""
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 403:
        return "permission_error", None
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _error_body(
    provider: Provider, status: int, message: str, *, content_policy: bool, not_found_model: bool
) -> dict[str, Any]:
    if provider == "openai":
        error_type, code = _openai_error_type(status)
        if content_policy:
            error_type, code = "invalid_request_error", "content_policy_violation"
        elif not_found_model:
            code = "model_not_found"
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    default_type = "api_error" if status >= 500 else "invalid_request_error"
    error_type = _ANTHROPIC_ERROR_TYPES.get(status, default_type)
    if content_policy:
        error_type = "invalid_request_error"
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


async def _send_error(
    send: Send,
    provider: Provider,
    status: int,
    message: str | None,
    *,
    content_policy: bool = False,
    not_found_model: bool = False,
    retry_after: float | None = None,
) -> None:
    if message is None:
        message = _CONTENT_POLICY_MESSAGE if content_policy else _DEFAULT_ERROR_MESSAGES.get(status, "Error.")
    body = _error_body(
        provider, status, message, content_policy=content_policy, not_found_model=not_found_model
    )
    headers = _request_id_header(provider)
    if retry_after is not None:
        # Whole seconds as the HTTP spec writes them; fractions stay fractions (both SDKs accept
        # them) so tests can use sub-second backoffs.
        headers["retry-after"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else repr(retry_after)
        )
    await _send_json(send, status, body, headers)


def _request_id_header(provider: Provider) -> dict[str, str]:
    name = "x-request-id" if provider == "openai" else "request-id"
    return {name: f"req_{uuid.uuid4().hex[:24]}"}


# ---------------------------------------------------------------------- ASGI plumbing


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _wait(
    seconds: float, receive: Receive, stopping: asyncio.Event
) -> Literal["elapsed", "disconnected", "stopping"]:
    """Sleep ``seconds``, ending early if the client disconnects or the server is stopping."""
    # Once the body has been read, the next receive() only completes on disconnect.
    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(receive())
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait({sleeper, watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, watcher, stopper):
            task.cancel()
    if watcher in done:
        return "disconnected"
    return "stopping" if stopper in done else "elapsed"


async def _send_events(send: Send, events: list[tuple[str | None, Any]], headers: dict[str, str]) -> None:
    raw_headers = [
        (b"content-type", b"text/event-stream"),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        event = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
        await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _send_json(send: Send, status: int, body: Any, headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
