"""Provider failures, sorted into kinds the durable layer can act on.

The SDKs retry nothing here (``max_retries=0``): the Temporal activity that
calls the judge decides, from ``retryable`` and ``retry_after_seconds``.
Messages are built from status codes and error codes only, never from
response bodies, which can echo the prompt (and so the trace).

The SDKs are imported inside the classifiers: workflows import ``ErrorKind``
from here and must not load an LLM SDK.
"""

from __future__ import annotations

import math
import re
import time
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any, Literal, get_args

ErrorKind = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "auth",
    "invalid_request",
    "content_policy",
    "refusal",
    "malformed_output",
]

ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))
RETRYABLE_KINDS: frozenset[str] = frozenset({"rate_limited", "server_error", "timeout", "connection"})


class JudgeProviderError(Exception):
    """A failed judge call. ``message`` is short and safe to log."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        status_code: int | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status_code = status_code
        self.retry_after_seconds = retry_after_seconds
        # Replies received before the failure (set by run_judge), for cost accounting.
        self.exchanges: list[Any] = []

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions are pickled from ``args`` alone; keep every field.
        return (type(self), (self.kind, self.message, self.status_code, self.retry_after_seconds))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


# Error codes are quoted in messages only when they look like codes.
_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# How OpenAI, Azure OpenAI and Anthropic word a request blocked by policy.
_POLICY_RE = re.compile(r"content[ _-]?(policy|filter|management)|safety system", re.IGNORECASE)


def _error_code(exc: Any) -> str | None:
    for attribute in ("error_code", "code", "type"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str) and _CODE_RE.match(value):
            return value
    return None


def _blocked_by_policy(exc: Any) -> bool:
    fields = [getattr(exc, name, None) for name in ("error_code", "code", "type", "api_message", "message")]
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        fields.append(str(body))
    return any(isinstance(field, str) and _POLICY_RE.search(field) for field in fields)


def _status_kind(status: int, exc: Any) -> ErrorKind:
    if status == 429:
        # An exhausted quota is an account problem that waiting won't fix.
        return "auth" if getattr(exc, "code", None) == "insufficient_quota" else "rate_limited"
    if status == 408:
        return "timeout"
    if status == 499:
        return "connection"
    # 409 is a transient lock conflict; both SDKs retry it.
    if status == 409 or status >= 500:
        return "server_error"
    # 402: the account cannot pay for the call, which, like bad keys, needs an operator.
    if status in (401, 402, 403):
        return "auth"
    if _blocked_by_policy(exc):
        return "content_policy"
    return "invalid_request"


def _classify(exc: BaseException, sdk: ModuleType, provider: str) -> JudgeProviderError:
    if isinstance(exc, sdk.APITimeoutError):
        return JudgeProviderError("timeout", f"{provider}: request timed out")
    if isinstance(exc, sdk.APIConnectionError):
        return JudgeProviderError("connection", f"{provider}: connection failed")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        kind = _status_kind(status, exc)
        code = _error_code(exc)
        detail = f"HTTP {status}" + (f" ({code})" if code else "")
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        return JudgeProviderError(
            kind,
            f"{provider} {kind}: {detail}",
            status_code=status,
            retry_after_seconds=retry_after if kind in RETRYABLE_KINDS else None,
        )
    # Anything else is a reply the SDK could not handle: the request itself
    # will not fare better when repeated.
    return JudgeProviderError("invalid_request", f"{provider}: {type(exc).__name__}")


def classify_openai_error(exc: BaseException) -> JudgeProviderError:
    """Map an ``openai`` exception (also from OpenAI-compatible servers)."""
    import openai

    return _classify(exc, openai, "openai")


def classify_anthropic_error(exc: BaseException) -> JudgeProviderError:
    """Map an ``anthropic`` exception; 529 (overloaded) is a retryable server error."""
    import anthropic

    return _classify(exc, anthropic, "anthropic")
