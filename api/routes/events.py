"""``GET /api/v1/events``: the organisation's events as Server-Sent Events.

Each event is sent as ``id: <n>``, ``event: <kind>`` and one JSON ``data``
line. A client that reconnects with ``Last-Event-ID: <n>`` (browsers'
EventSource does so by itself) or ``?after=<n>`` gets everything after
``n`` that is still kept (a week, core.events.KEPT_FOR), then the live
events. Without either it gets only events from now on. ``follow=false``
sends what is there (after the cursor, or all that is kept) and ends: for
clients that poll. A stream whose API key is revoked ends at its next
keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic_core import to_jsonable_python
from sqlalchemy import func, select

from api.deps import AppResources, Caller, CurrentCaller, Resources
from api.errors import AUTHENTICATED_ERRORS, ApiError
from models.tables import ApiKey, Event

router = APIRouter(tags=["events"], responses=AUTHENTICATED_ERRORS)

BATCH = 500
LARGEST_ID = 2**63 - 1  # a bigint: a larger cursor would fail in the database, after the stream began


def _cursor(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None:
        return after
    try:
        cursor = int(last_event_id)
    except ValueError:
        cursor = -1
    if not 0 <= cursor <= LARGEST_ID:
        raise ApiError(
            422,
            "invalid_last_event_id",
            "Last-Event-ID must be the id of an event this stream sent",
            [{"field": "header.last-event-id", "message": "not an event id"}],
        )
    return cursor


def _frame(event: Event) -> bytes:
    body = {
        "id": event.id,
        "kind": event.kind,
        "trace_id": event.trace_id,
        "created_at": event.created_at,
        "data": event.data,
    }
    data = json.dumps(to_jsonable_python(body), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def _newest(resources: AppResources, organization_id: uuid.UUID) -> int:
    async with resources.autocommit_sessions() as session:
        newest = await session.scalar(
            select(func.max(Event.id)).where(Event.organization_id == organization_id)
        )
    return newest or 0


async def _after(resources: AppResources, organization_id: uuid.UUID, cursor: int) -> list[Event]:
    async with resources.autocommit_sessions() as session:
        return list(
            await session.scalars(
                select(Event)
                .where(Event.organization_id == organization_id, Event.id > cursor)
                .order_by(Event.id)
                .limit(BATCH)
            )
        )


async def _key_still_valid(resources: AppResources, caller: Caller) -> bool:
    async with resources.autocommit_sessions() as session:
        revoked = await session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == caller.api_key_id))
    return revoked is None


async def _stream(
    resources: AppResources, caller: Caller, cursor: int | None, follow: bool
) -> AsyncIterator[bytes]:
    keepalive = resources.settings.events_keepalive_seconds
    organization_id = caller.organization_id
    # Subscribed before the first read, so nothing stored in between is missed.
    subscription = resources.events.subscribe(organization_id) if follow else contextlib.nullcontext()
    async with subscription as wake:
        if cursor is None:
            # Following: from now on. Polling: everything kept.
            cursor = await _newest(resources, organization_id) if follow else 0
        yield b"retry: 2000\n\n"  # how long EventSource waits before reconnecting
        while True:
            if wake is not None:
                wake.clear()  # before reading: a notification during the read wakes the next wait
            batch = await _after(resources, organization_id, cursor)
            for event in batch:
                cursor = event.id
                yield _frame(event)
            if len(batch) == BATCH:
                continue
            if wake is None:
                return
            try:
                await asyncio.wait_for(wake.wait(), keepalive)
            except TimeoutError:
                if not await _key_still_valid(resources, caller):
                    return  # a revoked key ends the streams it opened
                yield b": keep-alive\n\n"


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_events(
    caller: CurrentCaller,
    resources: Resources,
    after: Annotated[
        int | None, Query(ge=0, le=LARGEST_ID, description="Send the events after this id.")
    ] = None,
    follow: Annotated[bool, Query(description="Keep the stream open for new events.")] = True,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Evaluation completed, review requested, verdict overridden, alert raised:
    the organisation's events as they happen, resumable."""
    cursor = _cursor(last_event_id, after)
    return StreamingResponse(
        _stream(resources, caller, cursor, follow),
        media_type="text/event-stream",
        # Proxies must not buffer or cache a live stream.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
