"""``GET /metrics`` and the middleware that times every request by route template."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import metrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Aggregate counters only (labels are fixed vocabularies), so no API key:
    it is meant for the deployment's Prometheus, not for organisations."""
    return Response(metrics.exposition(), media_type=metrics.TEXT_CONTENT_TYPE)


def route_template(scope: Scope) -> str | None:
    """The matched route's path template (``/api/v1/traces/{trace_id}``), never
    the raw path: ids in paths would make a series per trace."""
    # FastAPI keeps the routes of an included router as declared (without the
    # prefix) and records the full template in its own scope entry; older
    # versions put the prefixed route itself in scope["route"].
    fastapi_scope: Any = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    for candidate in (context, scope.get("route")):
        path = getattr(candidate, "path_format", None)
        if isinstance(path, str):
            return path
    return None


class RequestMetrics:
    """Observe each HTTP request's duration by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before responding
        route: str | None = None

        async def observing_send(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = message["status"]
                # Read while the route still owns the scope.
                route = route_template(scope)
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            metrics.http_request(
                method=scope["method"],
                route=route or route_template(scope),
                status=status,
                seconds=time.perf_counter() - started,
            )
