"""What the sync and async clients share: settings, retry timing, error parsing."""

from __future__ import annotations

import email.utils
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from aegis_sdk._errors import AegisAPIError

DEFAULT_BASE_URL = "http://localhost:8000"
# Worth another attempt: rate limited, or the server (or a proxy) failing for a while.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class ClientConfig:
    api_key: str
    base_url: str
    timeout: float
    max_retries: int
    backoff_seconds: float

    @classmethod
    def build(
        cls,
        api_key: str | None,
        base_url: str | None,
        timeout: float,
        max_retries: int,
        backoff_seconds: float,
    ) -> ClientConfig:
        key = api_key or os.environ.get("AEGIS_API_KEY")
        if not key:
            raise ValueError("an API key is needed: pass api_key= or set AEGIS_API_KEY")
        url = (base_url or os.environ.get("AEGIS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        return cls(key, url, timeout, max_retries, backoff_seconds)

    def httpx_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "headers": {"Authorization": f"Bearer {self.api_key}", "User-Agent": "metronis-aegis-sdk/0.1"},
            "timeout": self.timeout,
        }


def retry_delay(attempt: int, response: httpx.Response | None, backoff_seconds: float) -> float:
    """Seconds before attempt ``attempt + 1``: the server's Retry-After when it
    sent one (capped), else exponential backoff with jitter."""
    if response is not None:
        after = _retry_after(response.headers.get("Retry-After"))
        if after is not None:
            return min(after, MAX_RETRY_AFTER_SECONDS)
    return backoff_seconds * (2**attempt) * (0.5 + random.random() / 2)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def should_retry(
    attempt: int, max_retries: int, response: httpx.Response | None, *, idempotent: bool = True
) -> bool:
    """``response`` is None after a transport error (connection refused, timeout).
    A request that is not idempotent is retried only when the server said it
    did not process it (429)."""
    if attempt >= max_retries:
        return False
    if not idempotent:
        return response is not None and response.status_code == 429
    return response is None or response.status_code in RETRY_STATUSES


def parse(response: httpx.Response) -> Any:
    """The JSON body of a success; an ``AegisAPIError`` for anything else."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        error = response.json()["error"]
        code, message, details = str(error["code"]), str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.reason_phrase or "request failed", None
    raise AegisAPIError(response.status_code, code, message, details)
