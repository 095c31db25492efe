"""Fuzzing every /api/v1 operation from the app's own OpenAPI schema.

Schemathesis generates valid and invalid requests from the schema the app
publishes; each one is sent as a fresh organisation, and its response must not
be a 5xx and must match what the schema documents: status code, content type
and body. A 4xx must also be the API's JSON error naming the reason.

Hypothesis is synchronous, so it runs in a worker thread; every request goes
back to the test's event loop, where the database pool and the Temporal client
live (schemathesis' own ASGI transport would run the app on a second loop).
The run is bounded and reproducible: few examples per operation, a
derandomised seed, no deadline and no example database.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Iterator

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.deps import AppResources
from tests.helpers import OrgClient

# Examples per operation and generation mode (about 35 operations, most in both modes).
MAX_EXAMPLES = 25
# Seconds one request may take before the run counts as stuck.
REQUEST_TIMEOUT = 30.0
BASE_URL = "http://aegis.test"
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@pytest.fixture(autouse=True, scope="module")
def _hypothesis_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis' caches (constants, Unicode tables) go to a temporary directory, not the checkout."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def error_names_its_reason(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A 4xx is the API's JSON error with a message; a validation error lists the fields."""
    if not 400 <= response.status_code < 500:
        return
    error = response.json()["error"]
    assert error["message"], f"{response.status_code} {error['code']} without a message"
    if error["code"] == "validation_error":
        fields = [detail.get("field") for detail in error["details"] or []]
        assert fields and all(fields), f"validation_error naming no field: {error}"


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_names_its_reason,
]


def _request_of(case: schemathesis.Case, headers: dict[str, str]) -> requests.PreparedRequest:
    """The case as schemathesis would send it: query, body and content type serialised."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    fields = ("method", "url", "headers", "params", "cookies", "data", "json", "files", "auth")
    return requests.Request(**{name: kwargs[name] for name in fields if name in kwargs}).prepare()


# What FastAPI reads as true in a boolean query parameter.
_TRUE = {"true", "1", "yes", "on", "t", "y"}


def _bounded(case: schemathesis.Case) -> None:
    """The events stream stays open until the client leaves, and the ASGI
    transport waits for the whole body: fuzz its polling form
    (``follow=false``), with every other parameter as generated."""
    if case.path != "/api/v1/events":
        return
    query = dict(case.query or {})
    follow = query.get("follow", "true")
    if any(str(value).lower() in _TRUE for value in (follow if isinstance(follow, list) else [follow])):
        query["follow"] = "false"
    case.query = query


def _describe(exc: BaseException) -> str:
    """Schemathesis' or our own report (with a curl command) where there is one, else the traceback."""
    if isinstance(exc, schemathesis.errors.FailureGroup | AssertionError):
        return str(exc)
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(_describe(inner) for inner in exc.exceptions)
    return "".join(traceback.format_exception(exc))


async def test_every_operation_survives_generated_requests(
    api: httpx.AsyncClient, org: OrgClient, resources: AppResources
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(resources=resources)).include(
        path_regex=r"^/api/v1/"
    )
    loop = asyncio.get_running_loop()
    # Real ids next to generated ones, so that success responses are checked too.
    known = {"trace_id": await org.submit(), "name": "generic", "scope": "default"}

    def send(case: schemathesis.Case) -> None:
        _bounded(case)
        request = _request_of(case, org.headers)
        body = request.body.encode() if isinstance(request.body, str) else request.body
        call = api.request(request.method or "GET", request.url or "", headers=request.headers, content=body)
        try:
            response = asyncio.run_coroutine_threadsafe(call, loop).result(REQUEST_TIMEOUT)
        except Exception as exc:
            # The ASGI transport re-raises what the app answered a 500 for: report
            # the request and where the app raised, without the transport's frames.
            curl = case.as_curl_command(headers=dict(request.headers), base_url=BASE_URL)
            raised = "".join(traceback.format_exception(exc, limit=-3, chain=False))
            raise AssertionError(f"Server error\n\n{raised}\nReproduce with:\n\n    {curl}") from None
        case.validate_response(response, checks=CHECKS, headers=dict(request.headers))

    def fuzz(strategy: st.SearchStrategy[schemathesis.Case]) -> None:
        HYPOTHESIS(given(case=strategy)(send))()

    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        seeded = {name: value for name, value in known.items() if name in operation.path_parameters}
        for mode in GenerationMode:
            if mode.is_negative and not (list(operation.iter_parameters()) or operation.body):
                continue  # nothing to make invalid
            strategy = operation.as_strategy(generation_mode=mode)
            if seeded and mode.is_positive and operation.method.upper() != "DELETE":
                strategy = st.one_of(strategy, operation.as_strategy(mode, path_parameters=seeded))
            try:
                await asyncio.to_thread(fuzz, strategy)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"--- {operation.label} ({mode.value})\n{_describe(exc)}")
    assert not failures, "\n\n".join(failures)


TRACE = {"model": "gpt-4", "input": "What is 2+2?", "output": "4", "domain": "generic"}
# An id no organisation has (fixed, so that test ids stay the same from run to run).
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**TRACE, "input": "a\x00b"}, "body.input"),
        ({**TRACE, "external_id": "id\x00"}, "body.external_id"),
        ({**TRACE, "metadata": {"k\x00": 1}}, "body.metadata"),
        ({**TRACE, "rl_episode": {"\ud827": [1]}}, "body.rl_episode"),
        ({**TRACE, "rag_contexts": [{"score": float("nan")}]}, "body.rag_contexts"),
        ({**TRACE, "latency_ms": float("inf")}, "body.latency_ms"),
        ({**TRACE, "input_tokens": 2**31}, "body.input_tokens"),
    ],
)
async def test_values_the_database_cannot_store_are_422(org: OrgClient, body: dict, field: str) -> None:
    # These were 500s from the INSERT, the fuzzer's first finding. NaN and
    # infinity are not JSON, but Python's parser (and so the API) reads them.
    content = json.dumps(body).encode()
    response = await org.api.post(
        "/api/v1/traces", content=content, headers={**org.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [detail["field"] for detail in error["details"]]


async def test_a_batch_rejects_only_the_unstorable_trace(org: OrgClient) -> None:
    response = await org.post("/api/v1/traces/batch", json={"traces": [TRACE, {**TRACE, "output": "\x00"}]})
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["accepted"] for r in results] == [True, False]
    assert results[1]["errors"][0]["field"] == "body.traces.1.output"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/api-keys", {"name": "ci\x00"}),
        ("GET", "/api/v1/traces?model=%00", None),
        ("POST", f"/api/v1/reviews/{UNKNOWN_ID}/claim", {"reviewer": "a\x00"}),
    ],
)
async def test_nul_anywhere_else_is_422_naming_the_reason(
    org: OrgClient, method: str, path: str, body: dict | None
) -> None:
    response = await org.api.request(method, path, json=body, headers=org.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unstorable_value"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            "/api/v1/alert-channels",
            {"name": "x", "kind": "webhook", "url": "http://[::1"},
            "body.url",
        ),
        (
            "PUT",
            "/api/v1/judge/configs/default",
            {"provider": "openai", "model": "m", "base_url": "https://[x"},
            "body.base_url",
        ),
        ("GET", "/api/v1/domains/generic?version=2147483648", None, "query.version"),
        ("GET", f"/api/v1/evaluations/{UNKNOWN_ID}?version=2147483648", None, "query.version"),
    ],
)
async def test_unparsable_urls_and_out_of_range_versions_are_422(
    org: OrgClient, method: str, path: str, body: dict | None, field: str
) -> None:
    response = await org.api.request(method, path, json=body, headers=org.headers)
    assert response.status_code == 422, response.text
    assert field in [detail["field"] for detail in response.json()["error"]["details"]]
