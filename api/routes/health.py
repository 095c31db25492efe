"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Resources

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive. Touches nothing."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "A dependency is unreachable"}})
async def ready(resources: Resources) -> JSONResponse:
    """PostgreSQL and Temporal are reachable; 503 names the one that is not."""

    async def database() -> None:
        async with resources.session_factory() as session:
            await session.execute(text("SELECT 1"))

    async def temporal() -> None:
        await resources.temporal.service_client.check_health()

    checks = {"database": database, "temporal": temporal}
    results = await asyncio.gather(
        *(asyncio.wait_for(check(), READY_TIMEOUT_SECONDS) for check in checks.values()),
        return_exceptions=True,
    )
    status = {
        name: ("ok" if not isinstance(r, BaseException) else "unreachable")
        for name, r in zip(checks, results, strict=True)
    }
    failed = [name for name, s in status.items() if s != "ok"]
    if failed:
        log.warning("readiness failed: %s", ", ".join(failed))
        body = {
            "error": {
                "code": "not_ready",
                "message": f"Unreachable: {', '.join(failed)}",
                "details": status,
            }
        }
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": status})
