"""Authentication, tenant isolation and bad input: every failure is a clear 4xx JSON error."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from api.deps import AppResources, hash_api_key
from core.settings import Settings
from models.tables import ApiKey, Trace
from tests.conftest import ADMIN_TOKEN
from tests.helpers import OrgClient

TRACE = {"model": "gpt-4", "input": "What is 2+2?", "output": "4", "domain": "generic"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "invalid_authorization"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_authorization"),
        ({"Authorization": "Bearer not-a-metronis-key"}, "invalid_api_key"),
        ({"Authorization": "Bearer metronis_doesnotexist"}, "invalid_api_key"),
    ],
)
async def test_missing_or_malformed_keys_are_401(api: httpx.AsyncClient, headers: dict, code: str) -> None:
    response = await api.post("/api/v1/traces", json=TRACE, headers=headers)
    assert_error(response, 401, code)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_revoked_key_is_401_and_other_keys_keep_working(org: OrgClient) -> None:
    created = await org.post("/api/v1/api-keys", json={"name": "ci"})
    assert created.status_code == 201
    second_key = created.json()["api_key"]
    assert second_key.startswith("metronis_")

    keys = (await org.get("/api/v1/api-keys")).json()
    assert {k["name"] for k in keys} == {"default", "ci"}
    # Listing shows prefixes only: neither keys nor hashes.
    assert all(set(k) == {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at"} for k in keys)
    assert second_key not in str(keys)

    revoke = await org.delete(f"/api/v1/api-keys/{created.json()['id']}")
    assert revoke.status_code == 204
    response = await org.api.get("/api/v1/traces", headers={"Authorization": f"Bearer {second_key}"})
    assert_error(response, 401, "revoked_api_key")
    assert (await org.get("/api/v1/traces")).status_code == 200


async def _stored_keys(
    session_factory: async_sessionmaker[AsyncSession], organization_id: str
) -> list[ApiKey]:
    async with session_factory() as session:
        return list(
            await session.scalars(select(ApiKey).where(ApiKey.organization_id == uuid.UUID(organization_id)))
        )


async def test_keys_are_stored_hashed_with_the_pepper(
    org: OrgClient, settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    rows = await _stored_keys(session_factory, org.organization_id)
    assert [r.key_hash for r in rows] == [hash_api_key(org.api_key, settings)]
    # Not the plain digest: the database alone cannot confirm a guessed key.
    assert rows[0].key_hash != hashlib.sha256(org.api_key.encode()).hexdigest()
    assert org.api_key not in {r.key_hash for r in rows} | {r.prefix for r in rows}
    assert org.api_key.startswith(rows[0].prefix)


async def test_keys_made_before_the_pepper_still_work_and_are_rehashed(
    resources: AppResources, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    unpeppered = resources.settings.model_copy(update={"api_key_pepper": None})
    before = create_app(resources=AppResources(unpeppered, resources.session_factory, resources.temporal))
    after = create_app(resources=resources)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=before), base_url="http://aegis.test") as old_api,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=after), base_url="http://aegis.test") as new_api,
    ):
        created = await OrgClient.create(old_api, f"legacy-{uuid.uuid4().hex[:6]}")
        [row] = await _stored_keys(session_factory, created.organization_id)
        assert row.key_hash == hashlib.sha256(created.api_key.encode()).hexdigest()

        headers = {"Authorization": f"Bearer {created.api_key}"}
        assert (await new_api.get("/api/v1/traces", headers=headers)).status_code == 200
        [row] = await _stored_keys(session_factory, created.organization_id)
        assert row.key_hash == hash_api_key(created.api_key, resources.settings)
        # Upgraded for good: the peppered app keeps accepting it, a wrong key still fails.
        assert (await new_api.get("/api/v1/traces", headers=headers)).status_code == 200
        wrong = {"Authorization": f"Bearer {created.api_key[:-2]}xx"}
        assert (await new_api.get("/api/v1/traces", headers=wrong)).status_code == 401


async def test_revoking_another_organisations_key_is_404(org: OrgClient, other_org: OrgClient) -> None:
    keys = (await org.get("/api/v1/api-keys")).json()
    response = await other_org.delete(f"/api/v1/api-keys/{keys[0]['id']}")
    assert_error(response, 404, "not_found")
    assert (await org.get("/api/v1/traces")).status_code == 200


async def test_other_organisations_cannot_see_a_trace(org: OrgClient, other_org: OrgClient) -> None:
    trace_id = await org.submit()
    for path in (f"/api/v1/traces/{trace_id}", f"/api/v1/evaluations/{trace_id}"):
        assert_error(await other_org.get(path), 404, "not_found")
        assert (await org.get(path)).status_code == 200
    assert_error(await other_org.delete(f"/api/v1/traces/{trace_id}"), 404, "not_found")
    assert (await other_org.get("/api/v1/traces")).json()["items"] == []
    assert (await org.get(f"/api/v1/traces/{trace_id}")).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in TRACE.items() if k != "model"}, "body.model"),
        ({**TRACE, "model": ""}, "body.model"),
        ({**TRACE, "output": 42}, "body.output"),
        ({**TRACE, "domain": "Not A Domain!"}, "body.domain"),
        ({**TRACE, "input_tokens": -1}, "body.input_tokens"),
        ({**TRACE, "latency_ms": "fast"}, "body.latency_ms"),
        ({**TRACE, "metadata": ["not", "an", "object"]}, "body.metadata"),
        ({**TRACE, "unexpected": True}, "body.unexpected"),
        ({**TRACE, "external_id": "x" * 201}, "body.external_id"),
    ],
)
async def test_invalid_trace_is_422_naming_the_field(
    org: OrgClient, body: dict, field: str, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    response = await org.post("/api/v1/traces", json=body)
    error = assert_error(response, 422, "validation_error")
    assert field in [d["field"] for d in error["details"]]
    assert field in error["message"]
    # Nothing half-written stays behind.
    async with session_factory() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Trace)
            .where(Trace.organization_id == uuid.UUID(org.organization_id))
        )
    assert count == 0


async def test_malformed_json_is_422(org: OrgClient) -> None:
    response = await org.api.post(
        "/api/v1/traces",
        content=b'{"model": "gpt-4", ',
        headers={**org.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 422, "validation_error")


async def test_error_messages_do_not_echo_trace_text(org: OrgClient) -> None:
    secret = "patient John Secret-Name SSN 219-09-9999"
    response = await org.post("/api/v1/traces", json={**TRACE, "input": secret, "output": 12345})
    assert response.status_code == 422
    assert "Secret-Name" not in response.text and "219-09-9999" not in response.text


async def test_unknown_trace_and_bad_ids(org: OrgClient) -> None:
    assert_error(await org.get(f"/api/v1/traces/{uuid.uuid4()}"), 404, "not_found")
    error = assert_error(await org.get("/api/v1/traces/not-a-uuid"), 422, "validation_error")
    assert error["details"][0]["field"] == "path.trace_id"
    assert_error(await org.get("/api/v1/traces", params={"limit": 0}), 422, "validation_error")
    assert_error(await org.get("/api/v1/traces", params={"status": "bogus"}), 422, "validation_error")
    assert_error(await org.get("/api/v1/nowhere"), 404, "not_found")


async def test_batch_over_the_limit_is_422(org: OrgClient, resources: AppResources) -> None:
    limit = resources.settings.max_batch_size
    response = await org.post("/api/v1/traces/batch", json={"traces": [TRACE] * (limit + 1)})
    error = assert_error(response, 422, "batch_too_large")
    assert error["details"][0]["field"] == "body.traces"
    assert (await org.get("/api/v1/traces")).json()["items"] == []


async def test_body_over_the_limit_is_413(resources: AppResources, org: OrgClient) -> None:
    small = AppResources(
        resources.settings.model_copy(update={"max_request_bytes": 2048}),
        resources.session_factory,
        resources.temporal,
    )
    app = create_app(resources=small)
    big = {**TRACE, "output": "x" * 4096}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
    ) as client:
        response = await client.post("/api/v1/traces", json=big, headers=org.headers)
        assert_error(response, 413, "payload_too_large")

        async def chunks():  # no Content-Length: the limit applies while streaming
            for _ in range(4):
                yield b"x" * 1024

        streamed = await client.post("/api/v1/traces", content=chunks(), headers=org.headers)
        assert_error(streamed, 413, "payload_too_large")
        ok = await client.post("/api/v1/traces", json=TRACE, headers=org.headers)
        assert ok.status_code == 202


async def test_signup_needs_admin_token_when_closed(resources: AppResources) -> None:
    closed = AppResources(
        resources.settings.model_copy(update={"allow_signup": False}),
        resources.session_factory,
        resources.temporal,
    )
    app = create_app(resources=closed)
    body = {"name": "Closed Org", "email": "ops@example.com"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
    ) as client:
        assert_error(await client.post("/api/v1/organizations", json=body), 403, "signup_disabled")
        wrong = await client.post(
            "/api/v1/organizations", json=body, headers={"Authorization": "Bearer wrong"}
        )
        assert_error(wrong, 403, "signup_disabled")
        ok = await client.post(
            "/api/v1/organizations", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert ok.status_code == 201
        assert ok.json()["api_key"].startswith("metronis_")
        invalid = await client.post(
            "/api/v1/organizations",
            json={"name": "x", "email": "not-an-email"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert "body.email" in [d["field"] for d in assert_error(invalid, 422, "validation_error")["details"]]
