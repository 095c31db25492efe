"""FastAPI application factory and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import console
from api.deps import AppResources
from api.errors import install_error_handlers
from api.metrics import RequestMetrics
from api.metrics import router as metrics_router
from api.middleware import BodySizeLimit
from api.ratelimit import KeyRateLimiter
from api.routes import (
    alerts,
    analytics,
    audit,
    codec,
    domains,
    evaluations,
    events,
    health,
    judge,
    labels,
    models,
    operations,
    organization_data,
    organizations,
    otlp,
    reviews,
    traces,
    usage,
)
from core.db import API_APPLICATION_NAME, create_engine, create_session_factory
from core.gc_pauses import freeze_startup_objects
from core.settings import Settings, get_settings
from core.temporal import connect


def create_app(settings: Settings | None = None, resources: AppResources | None = None) -> FastAPI:
    """Build the app. Tests pass ready ``resources``; processes let the lifespan build them."""
    settings = resources.settings if resources else (settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resources is not None:
            app.state.resources = resources
            yield
            return
        engine = create_engine(settings, application_name=API_APPLICATION_NAME)
        # Lazy: the API starts and keeps accepting traces while Temporal is down.
        temporal = await connect(settings, lazy=True)
        app.state.resources = AppResources(settings, create_session_factory(engine), temporal)
        freeze_startup_objects()
        try:
            yield
        finally:
            # Starts still queued after a few seconds stay pending_dispatch for the sweep.
            await app.state.resources.dispatcher.aclose()
            await app.state.resources.events.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Metronis Aegis",
        version="0.1.0",
        description="Tiered, durable evaluation of production LLM traces.",
        lifespan=lifespan,
    )
    if resources is not None:
        app.state.resources = resources
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        # Off unless configured: browsers may call the API only from these origins.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            # X-Namespace: the Temporal UI sends it to the codec server.
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Namespace"],
        )
    # Added last, so outermost: it also times requests the others answer (413, CORS preflight).
    app.add_middleware(RequestMetrics)
    app.state.rate_limiter = (
        KeyRateLimiter(settings.api_rate_limit_per_minute) if settings.api_rate_limit_per_minute else None
    )
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(codec.router)
    app.include_router(otlp.router)
    app.include_router(organizations.router, prefix="/api/v1")
    app.include_router(organization_data.router, prefix="/api/v1")
    app.include_router(traces.router, prefix="/api/v1")
    app.include_router(evaluations.router, prefix="/api/v1")
    app.include_router(domains.router, prefix="/api/v1")
    app.include_router(judge.router, prefix="/api/v1")
    app.include_router(labels.router, prefix="/api/v1")
    app.include_router(reviews.router, prefix="/api/v1")
    app.include_router(usage.router, prefix="/api/v1")
    app.include_router(analytics.router, prefix="/api/v1")
    app.include_router(events.router, prefix="/api/v1")
    console.install(app)
    app.include_router(alerts.router, prefix="/api/v1")
    app.include_router(audit.router, prefix="/api/v1")
    app.include_router(models.router, prefix="/api/v1")
    app.include_router(operations.router, prefix="/api/v1")
    return app
