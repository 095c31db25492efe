"""Per-key rate limiting and CORS, as configured."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from api.deps import AppResources
from api.ratelimit import KeyRateLimiter
from tests.helpers import OrgClient


def limiter_waits(per_minute: int, requests: int) -> list[float]:
    limiter, key = KeyRateLimiter(per_minute), uuid.uuid4()
    return [limiter.take(key, now=0.0) for _ in range(requests)]


def test_the_bucket_allows_a_burst_then_spaces_requests() -> None:
    waits = limiter_waits(per_minute=60, requests=12)  # one a second, bursts of ten
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(1.0)
    limiter, key = KeyRateLimiter(60), uuid.uuid4()
    for _ in range(10):
        limiter.take(key, now=0.0)
    assert limiter.take(key, now=0.5) == pytest.approx(0.5)
    assert limiter.take(key, now=2.0) == 0.0  # refilled meanwhile
    assert limiter.take(uuid.uuid4(), now=0.0) == 0.0  # another key has its own bucket


@pytest.fixture
async def limited_api(resources: AppResources) -> AsyncIterator[httpx.AsyncClient]:
    settings = resources.settings.model_copy(
        update={"api_rate_limit_per_minute": 6, "cors_origins": ["https://console.example.com"]}
    )
    app = create_app(resources=AppResources(settings, resources.session_factory, resources.temporal))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
    ) as client:
        yield client


async def test_a_key_over_its_rate_gets_429_with_retry_after(limited_api: httpx.AsyncClient) -> None:
    first = await OrgClient.create(limited_api, f"limited-{uuid.uuid4().hex[:6]}")
    second = await OrgClient.create(limited_api, f"limited-{uuid.uuid4().hex[:6]}")
    assert (await first.get("/api/v1/traces")).status_code == 200
    refused = await first.get("/api/v1/traces")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await second.get("/api/v1/traces")).status_code == 200  # one key's limit only


async def test_cors_is_off_unless_configured(limited_api: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    preflight = {
        "Origin": "https://console.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = await limited_api.options("/api/v1/traces", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://console.example.com"
    other = await limited_api.options(
        "/api/v1/traces", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    default = await api.options("/api/v1/traces", headers=preflight)
    assert "access-control-allow-origin" not in default.headers
