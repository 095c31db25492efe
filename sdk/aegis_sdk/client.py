"""``AegisClient`` and ``AsyncAegisClient``: the REST API, with retries.

Both retry a request on 429 and 5xx answers (waiting what Retry-After says,
else backing off exponentially) and on connection errors and timeouts, up
to ``max_retries`` times (a label only on 429: the server may have stored
one it failed to answer). A submitted trace without an ``external_id`` gets
a random one first, so that a retried submission is not stored twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx

from aegis_sdk import _http
from aegis_sdk._errors import AegisTimeout
from aegis_sdk.models import (
    Accepted,
    BatchAccepted,
    Evaluation,
    LabelResult,
    LabelVerdict,
    Page,
    Trace,
    TraceSummary,
)

API = "/api/v1"
# Between polls of wait_for_evaluation: from the first to the longest.
POLL_FIRST_SECONDS = 0.2
POLL_MAX_SECONDS = 2.0


def trace_body(trace: Trace | Mapping[str, Any]) -> dict[str, Any]:
    """The request body of one trace, with an idempotency ``external_id``."""
    model = trace if isinstance(trace, Trace) else Trace.model_validate(dict(trace))
    if model.external_id is None:
        model = model.model_copy(update={"external_id": f"sdk-{uuid.uuid4()}"})
    return model.body()


def _label_body(
    verdict: LabelVerdict, reviewer: str, severity: str | None, notes: str | None, issues: Sequence[Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"verdict": verdict, "reviewer": reviewer, "issues": list(issues)}
    if severity is not None:
        body["severity"] = severity
    if notes is not None:
        body["notes"] = notes
    return body


def _trace_filters(
    domain: str | None,
    status: str | None,
    model: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    q: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    params = {
        "q": q,
        "domain": domain,
        "status": status,
        "model": model,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "limit": limit,
        "cursor": cursor,
    }
    return {name: value for name, value in params.items() if value is not None}


class AegisClient:
    """The Aegis API, synchronously. Use it as a context manager, or ``close()`` it."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.config = _http.ClientConfig.build(api_key, base_url, timeout, max_retries, backoff_seconds)
        self._http = httpx.Client(**self.config.httpx_options())

    def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, API + path, **kwargs)
            except httpx.TransportError:
                if not _http.should_retry(attempt, self.config.max_retries, None, idempotent=idempotent):
                    raise
            if response is not None and not _http.should_retry(
                attempt, self.config.max_retries, response, idempotent=idempotent
            ):
                return _http.parse(response)
            time.sleep(_http.retry_delay(attempt, response, self.config.backoff_seconds))
            attempt += 1

    def submit(self, trace: Trace | Mapping[str, Any]) -> Accepted:
        """Store one trace for evaluation; answers at once with its id."""
        return Accepted.model_validate(self._request("POST", "/traces", json=trace_body(trace)))

    def submit_batch(self, traces: Sequence[Trace | Mapping[str, Any]]) -> BatchAccepted:
        """Store up to 1,000 traces in one request; each is accepted or rejected on its own."""
        body = {"traces": [trace_body(trace) for trace in traces]}
        return BatchAccepted.model_validate(self._request("POST", "/traces/batch", json=body))

    def get_evaluation(self, trace_id: uuid.UUID | str, *, version: int | None = None) -> Evaluation:
        params = {"version": version} if version is not None else None
        return Evaluation.model_validate(self._request("GET", f"/evaluations/{trace_id}", params=params))

    def wait_for_evaluation(self, trace_id: uuid.UUID | str, *, timeout: float = 120.0) -> Evaluation:
        """Poll, backing off, until the automated verdict is stored (``completed``,
        ``awaiting_review`` or ``failed``); ``AegisTimeout`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        interval = POLL_FIRST_SECONDS
        while True:
            evaluation = self.get_evaluation(trace_id)
            if evaluation.final:
                return evaluation
            if time.monotonic() + interval > deadline:
                raise AegisTimeout(f"trace {trace_id} is still {evaluation.status} after {timeout} s")
            time.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX_SECONDS)

    def label(
        self,
        trace_id: uuid.UUID | str,
        verdict: LabelVerdict,
        *,
        reviewer: str,
        severity: str | None = None,
        notes: str | None = None,
        issues: Sequence[Mapping[str, Any]] = (),
    ) -> LabelResult:
        """An expert's label: it overrides every automated verdict."""
        body = _label_body(verdict, reviewer, severity, notes, issues)
        # Not retried after a failure the server may have acted on: a label twice is two labels.
        return LabelResult.model_validate(
            self._request("POST", f"/traces/{trace_id}/labels", idempotent=False, json=body)
        )

    def list_traces(
        self,
        *,
        domain: str | None = None,
        status: str | None = None,
        model: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[TraceSummary]:
        """One page, newest first; pass ``next_cursor`` back as ``cursor`` for the next.
        ``q`` searches the input and output text (words, "a phrase", -excluded)."""
        params = _trace_filters(domain, status, model, since, until, q, limit, cursor)
        return Page[TraceSummary].model_validate(self._request("GET", "/traces", params=params))

    def iter_traces(self, **filters: Any) -> Iterator[TraceSummary]:
        """Every trace matching ``list_traces``' filters, page after page."""
        cursor = None
        while True:
            page = self.list_traces(**filters, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AegisClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncAegisClient:
    """The Aegis API for asyncio code: the same methods as ``AegisClient``, awaited."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.config = _http.ClientConfig.build(api_key, base_url, timeout, max_retries, backoff_seconds)
        self._http = httpx.AsyncClient(**self.config.httpx_options())

    async def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(method, API + path, **kwargs)
            except httpx.TransportError:
                if not _http.should_retry(attempt, self.config.max_retries, None, idempotent=idempotent):
                    raise
            if response is not None and not _http.should_retry(
                attempt, self.config.max_retries, response, idempotent=idempotent
            ):
                return _http.parse(response)
            await asyncio.sleep(_http.retry_delay(attempt, response, self.config.backoff_seconds))
            attempt += 1

    async def submit(self, trace: Trace | Mapping[str, Any]) -> Accepted:
        return Accepted.model_validate(await self._request("POST", "/traces", json=trace_body(trace)))

    async def submit_batch(self, traces: Sequence[Trace | Mapping[str, Any]]) -> BatchAccepted:
        body = {"traces": [trace_body(trace) for trace in traces]}
        return BatchAccepted.model_validate(await self._request("POST", "/traces/batch", json=body))

    async def get_evaluation(self, trace_id: uuid.UUID | str, *, version: int | None = None) -> Evaluation:
        params = {"version": version} if version is not None else None
        return Evaluation.model_validate(
            await self._request("GET", f"/evaluations/{trace_id}", params=params)
        )

    async def wait_for_evaluation(self, trace_id: uuid.UUID | str, *, timeout: float = 120.0) -> Evaluation:
        deadline = time.monotonic() + timeout
        interval = POLL_FIRST_SECONDS
        while True:
            evaluation = await self.get_evaluation(trace_id)
            if evaluation.final:
                return evaluation
            if time.monotonic() + interval > deadline:
                raise AegisTimeout(f"trace {trace_id} is still {evaluation.status} after {timeout} s")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX_SECONDS)

    async def label(
        self,
        trace_id: uuid.UUID | str,
        verdict: LabelVerdict,
        *,
        reviewer: str,
        severity: str | None = None,
        notes: str | None = None,
        issues: Sequence[Mapping[str, Any]] = (),
    ) -> LabelResult:
        body = _label_body(verdict, reviewer, severity, notes, issues)
        return LabelResult.model_validate(
            await self._request("POST", f"/traces/{trace_id}/labels", idempotent=False, json=body)
        )

    async def list_traces(
        self,
        *,
        domain: str | None = None,
        status: str | None = None,
        model: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[TraceSummary]:
        params = _trace_filters(domain, status, model, since, until, q, limit, cursor)
        return Page[TraceSummary].model_validate(await self._request("GET", "/traces", params=params))

    async def iter_traces(self, **filters: Any) -> AsyncIterator[TraceSummary]:
        cursor = None
        while True:
            page = await self.list_traces(**filters, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAegisClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
