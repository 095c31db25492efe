"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Messages name the field or the reason, never echo trace text, and never carry
a stack trace; unexpected exceptions become a generic 500 and are logged with
the request path only.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
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


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable, e.g. `not_found` or `validation_error`.")
    message: str = Field(description="Names the field or the reason.")
    details: Any = Field(
        default=None, description="Validation errors: `[{field, message, type}]`; else specific or null."
    )


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx response."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Malformed request: a body that cannot be parsed, a bad cursor or Content-Length",
    401: "No API key, or one that is not valid or revoked",
    403: "Not allowed",
    404: "Not found, or not the caller's",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input; `details` names the fields",
    429: "Rate limited; retry after Retry-After seconds",
    503: "A dependency (the database or Temporal) is unavailable; retry later",
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for OpenAPI: these statuses, each with the one error shape.

    A documented 422 also replaces FastAPI's default, whose ``detail`` shape
    this API does not use.
    """
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in status_codes}


# What any /api/v1 request can get, whatever the route.
REQUEST_ERRORS = error_responses(400, 413, 422, 503)
# Plus what the API-key check (deps.get_caller) answers.
AUTHENTICATED_ERRORS = REQUEST_ERRORS | error_responses(401, 429)


def invalid_range(field: str, message: str) -> NoReturn:
    """A 422 for a query parameter of a time range (``field``: its name)."""
    raise ApiError(
        422, "invalid_range", f"Invalid {field}: {message}", [{"field": f"query.{field}", "message": message}]
    )


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
        if getattr(exc.orig, "sqlstate", None) in _UNSTORABLE_VALUE:
            return _unstorable_value(request, exc)
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


# SQLSTATEs of a value PostgreSQL refuses: a request field it cannot store or compare.
_UNSTORABLE_VALUE = frozenset(
    {
        "22000",  # asyncpg cannot encode an argument (an integer out of the column's range)
        "22001",  # text longer than its column
        "22003",  # number out of range
        "22021",  # NUL character in text
        "22P02",  # invalid JSON text (a lone surrogate, NaN)
        "22P05",  # \u0000 in JSON
    }
)


def _unstorable_value(request: Request, exc: DBAPIError) -> JSONResponse:
    """Input that passed validation but that the database refuses: the client's to fix, not a 500.

    Validation names the field wherever it can; this is the net for the rest.
    """
    log.warning(
        "unstorable value (SQLSTATE %s) on %s %s",
        getattr(exc.orig, "sqlstate", None),
        request.method,
        request.url.path,
    )
    return JSONResponse(
        error_body(
            "unstorable_value",
            "A value in the request cannot be stored (e.g. text with a NUL character, a number out of range)",
        ),
        status_code=422,
    )


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL is unreachable: nothing was stored, and the client may retry."""
    log.warning("database unavailable (%s) on %s %s", type(exc).__name__, request.method, request.url.path)
    return JSONResponse(
        error_body("database_unavailable", "The database is unavailable; nothing was stored. Retry later."),
        status_code=503,
        headers={"Retry-After": "5"},
    )
