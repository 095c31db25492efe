"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Messages name the field or the reason, never echo trace text, and never carry
a stack trace; unexpected exceptions become a generic 500 and are logged with
the request path only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def validation_details(errors: list[Any]) -> list[dict[str, Any]]:
    """Turn pydantic errors into ``[{"field": "body.model", "message": ...}]``.

    The offending input value is deliberately left out: it may be trace text.
    """
    details = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        details.append(
            {"field": ".".join(loc), "message": err.get("msg", "invalid"), "type": err.get("type")}
        )
    return details


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(list(exc.errors()))
        fields = ", ".join(d["field"] for d in details[:5])
        return JSONResponse(
            error_body("validation_error", f"Invalid request: {fields}", details), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return _database_unavailable(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _pool_timeout(request: Request, exc: SQLAlchemyTimeoutError) -> JSONResponse:
        return _database_unavailable(request, exc)

    @app.exception_handler(ConnectionError)
    async def _connection_error(request: Request, exc: ConnectionError) -> JSONResponse:
        return _database_unavailable(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the type and path only: exception messages can contain data.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "Internal server error"), status_code=500)


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL is unreachable: nothing was stored, and the client may retry."""
    log.warning("database unavailable (%s) on %s %s", type(exc).__name__, request.method, request.url.path)
    return JSONResponse(
        error_body("database_unavailable", "The database is unavailable; nothing was stored. Retry later."),
        status_code=503,
        headers={"Retry-After": "5"},
    )
