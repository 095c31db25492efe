"""Keyset (cursor) pagination over ``(created_at DESC, id DESC)``."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from api.errors import ApiError

MAX_PAGE_SIZE = 500
Row = TypeVar("Row")


def encode_cursor(created_at: dt.datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        return dt.datetime.fromisoformat(created_at), uuid.UUID(row_id)
    except (ValueError, TypeError) as exc:
        raise ApiError(
            400,
            "invalid_cursor",
            "The cursor is not valid",
            [{"field": "query.cursor", "message": "malformed cursor"}],
        ) from exc


def paginate(
    query: Select[Any],
    created_at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[Any],
    cursor: str | None,
    limit: int,
) -> Select[Any]:
    """Newest first; fetches ``limit + 1`` rows so the caller knows whether a next page exists."""
    if cursor:
        after_time, after_id = decode_cursor(cursor)
        query = query.where(or_(created_at < after_time, and_(created_at == after_time, row_id < after_id)))
    return query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)


def within(
    query: Select[Any],
    created_at: InstrumentedAttribute[Any],
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> Select[Any]:
    """The ``since <= created_at < until`` filter every list endpoint offers."""
    if since:
        query = query.where(created_at >= since)
    if until:
        query = query.where(created_at < until)
    return query


def split_page(
    rows: Sequence[Row], limit: int, key: Callable[[Row], tuple[dt.datetime, uuid.UUID]]
) -> tuple[list[Row], str | None]:
    """The page itself and the cursor of the next one (None on the last page)."""
    page = list(rows[:limit])
    return page, (encode_cursor(*key(page[-1])) if len(rows) > limit else None)
