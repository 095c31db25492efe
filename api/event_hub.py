"""One LISTEN connection per API process, shared by every open event stream.

PostgreSQL notifies ``aegis_events`` with an organisation's id whenever an
event of that organisation is stored; the hub wakes that organisation's
streams, which then read the new rows themselves. A notification is only a
wake-up: a stream that misses one (the connection dropped, say) catches up
on its next read, which the hub triggers after every reconnect and each
stream does on its keep-alive anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from core.events import CHANNEL

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 1.0


class EventHub:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._waiting: dict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def subscribe(self, organization_id: uuid.UUID) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the organisation may have new events."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="aegis-event-hub")
        wake = asyncio.Event()
        self._waiting[organization_id].add(wake)
        try:
            yield wake
        finally:
            waiting = self._waiting[organization_id]
            waiting.discard(wake)
            if not waiting:
                del self._waiting[organization_id]

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self) -> None:
        while True:
            try:
                async with self._engine.connect() as connection:
                    raw = (await connection.get_raw_connection()).driver_connection
                    lost = asyncio.Event()
                    raw.add_termination_listener(lambda _connection, lost=lost: lost.set())
                    await raw.add_listener(CHANNEL, self._notified)
                    self._wake_everyone()  # whatever came while nobody listened
                    await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is away: streams keep polling meanwhile
                log.warning("event listener lost its connection (%s); reconnecting", type(error).__name__)
            self._wake_everyone()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            organization_id = uuid.UUID(payload)
        except ValueError:
            return
        for wake in self._waiting.get(organization_id, ()):
            wake.set()

    def _wake_everyone(self) -> None:
        for waiting in self._waiting.values():
            for wake in waiting:
                wake.set()
