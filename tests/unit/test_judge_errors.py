"""Classification of the SDKs' real exception objects into JudgeProviderError."""

from __future__ import annotations

import pickle
import time
from email.utils import formatdate
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from evaluators.judge.errors import (
    JudgeProviderError,
    classify_anthropic_error,
    classify_openai_error,
    parse_retry_after,
)

# Bodies can echo the request; none of this may reach a message.
SECRET = "Jane Roe 219-09-9999 sk-live-secret"


def response(
    status: int, headers: dict[str, str] | None = None, url: str = "https://api.example/v1/x"
) -> Any:
    return httpx2.Response(status, headers=headers or {}, request=httpx2.Request("POST", url))


def openai_error(
    cls: type[openai.APIStatusError], status: int, code: str | None = None, **headers: str
) -> Any:
    # The SDK hands the "error" object of the body to the exception.
    body = {"message": f"Bad input: {SECRET}", "type": "invalid_request_error", "param": None, "code": code}
    return cls(f"Error code: {status} - {body}", response=response(status, headers), body=body)


def anthropic_error(
    cls: type[anthropic.APIStatusError], status: int, error_type: str, message: str = "", **headers: str
) -> Any:
    body = {"type": "error", "error": {"type": error_type, "message": message or f"Bad: {SECRET}"}}
    return cls(f"Error code: {status} - {body}", response=response(status, headers), body=body)


def check(error: JudgeProviderError, kind: str, retryable: bool, status: int | None) -> None:
    assert (error.kind, error.retryable, error.status_code) == (kind, retryable, status)
    assert "Jane" not in str(error) and "sk-live" not in str(error) and "Bad" not in str(error)
    assert str(error) == error.message


@pytest.mark.parametrize(
    ("exc", "kind", "retryable", "status"),
    [
        (openai_error(openai.RateLimitError, 429, "rate_limit_exceeded"), "rate_limited", True, 429),
        (openai_error(openai.RateLimitError, 429, "insufficient_quota"), "auth", False, 429),
        (openai_error(openai.InternalServerError, 500), "server_error", True, 500),
        (openai_error(openai.InternalServerError, 503), "server_error", True, 503),
        (openai_error(openai.ConflictError, 409), "server_error", True, 409),
        (openai_error(openai.AuthenticationError, 401, "invalid_api_key"), "auth", False, 401),
        (openai_error(openai.PermissionDeniedError, 403), "auth", False, 403),
        (openai_error(openai.BadRequestError, 400), "invalid_request", False, 400),
        (openai_error(openai.BadRequestError, 400, "content_policy_violation"), "content_policy", False, 400),
        (openai_error(openai.BadRequestError, 400, "content_filter"), "content_policy", False, 400),
        (openai_error(openai.NotFoundError, 404, "model_not_found"), "invalid_request", False, 404),
        (openai_error(openai.UnprocessableEntityError, 422), "invalid_request", False, 422),
        (openai_error(openai.APIStatusError, 408), "timeout", True, 408),
    ],
)
def test_openai_status_errors(exc: openai.APIStatusError, kind: str, retryable: bool, status: int) -> None:
    check(classify_openai_error(exc), kind, retryable, status)


def test_openai_message_names_status_and_code_only() -> None:
    error = classify_openai_error(openai_error(openai.RateLimitError, 429, "rate_limit_exceeded"))
    assert error.message == "openai rate_limited: HTTP 429 (rate_limit_exceeded)"


def test_openai_transport_errors() -> None:
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    check(classify_openai_error(openai.APITimeoutError(request)), "timeout", True, None)
    check(classify_openai_error(openai.APIConnectionError(request=request)), "connection", True, None)
    check(classify_openai_error(openai.OpenAIError(SECRET)), "invalid_request", False, None)


@pytest.mark.parametrize(
    ("exc", "kind", "retryable", "status"),
    [
        (anthropic_error(anthropic.RateLimitError, 429, "rate_limit_error"), "rate_limited", True, 429),
        (anthropic_error(anthropic.OverloadedError, 529, "overloaded_error"), "server_error", True, 529),
        (anthropic_error(anthropic.InternalServerError, 500, "api_error"), "server_error", True, 500),
        (anthropic_error(anthropic.ServiceUnavailableError, 503, "api_error"), "server_error", True, 503),
        (anthropic_error(anthropic.GatewayTimeoutError, 504, "timeout_error"), "server_error", True, 504),
        (anthropic_error(anthropic.RequestTimeoutError, 408, "timeout_error"), "timeout", True, 408),
        (anthropic_error(anthropic.AuthenticationError, 401, "authentication_error"), "auth", False, 401),
        (anthropic_error(anthropic.PermissionDeniedError, 403, "permission_error"), "auth", False, 403),
        (anthropic_error(anthropic.PaymentRequiredError, 402, "billing_error"), "auth", False, 402),
        (
            anthropic_error(anthropic.BadRequestError, 400, "invalid_request_error"),
            "invalid_request",
            False,
            400,
        ),
        (anthropic_error(anthropic.NotFoundError, 404, "not_found_error"), "invalid_request", False, 404),
        (
            anthropic_error(anthropic.ContentTooLargeError, 413, "request_too_large"),
            "invalid_request",
            False,
            413,
        ),
        (
            anthropic_error(
                anthropic.BadRequestError,
                400,
                "invalid_request_error",
                "Output blocked by content filtering policy",
            ),
            "content_policy",
            False,
            400,
        ),
    ],
)
def test_anthropic_status_errors(
    exc: anthropic.APIStatusError, kind: str, retryable: bool, status: int
) -> None:
    check(classify_anthropic_error(exc), kind, retryable, status)


def test_anthropic_transport_errors() -> None:
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    check(classify_anthropic_error(anthropic.APITimeoutError(request)), "timeout", True, None)
    check(classify_anthropic_error(anthropic.APIConnectionError(request=request)), "connection", True, None)


def test_retry_after_from_headers() -> None:
    seconds = openai_error(openai.RateLimitError, 429, **{"retry-after": "2"})
    assert classify_openai_error(seconds).retry_after_seconds == 2.0
    millis = anthropic_error(anthropic.OverloadedError, 529, "overloaded_error", **{"retry-after-ms": "1500"})
    assert classify_anthropic_error(millis).retry_after_seconds == 1.5
    date = openai_error(
        openai.InternalServerError, 503, **{"retry-after": formatdate(time.time() + 30, usegmt=True)}
    )
    assert 25 <= (classify_openai_error(date).retry_after_seconds or 0) <= 30
    assert classify_openai_error(openai_error(openai.RateLimitError, 429)).retry_after_seconds is None
    # Waiting does not fix a non-retryable error, so no delay is suggested.
    auth = openai_error(openai.AuthenticationError, 401, **{"retry-after": "5"})
    assert classify_openai_error(auth).retry_after_seconds is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx2.Headers(headers)) == expected


def test_provider_error_survives_pickling() -> None:
    error = JudgeProviderError("rate_limited", "openai rate_limited: HTTP 429", 429, 2.0)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.message, copy.status_code, copy.retry_after_seconds) == (
        "rate_limited",
        error.message,
        429,
        2.0,
    )
    assert copy.retryable
    with pytest.raises(ValueError):
        JudgeProviderError("exploded", "x")  # type: ignore[arg-type]
