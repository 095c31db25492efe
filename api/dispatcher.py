"""Starting the workflows of accepted traces, off the request path.

Ingestion answers as soon as a trace is committed to PostgreSQL (status
``pending_dispatch``); this dispatcher then starts the workflows in the
background, many at a time, and marks them ``queued`` in one statement per
round. A client therefore waits for one database write, not for Temporal.

Nothing is lost when the dispatcher cannot do its job: a trace whose start
failed (Temporal down), that did not fit in the queue, or whose process died
before its turn stays ``pending_dispatch`` in PostgreSQL, where the dispatch
sweep (a Temporal schedule) finds and starts it. Starting twice is harmless:
the workflow id is derived from the trace id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.dispatch import mark_queued, start_evaluation
from core.settings import Settings

log = logging.getLogger(__name__)

# Workflow starts in flight at once: enough to hide the round trip, few
# enough not to flood the Temporal frontend.
START_CONCURRENCY = 32
# Traces taken from the queue per round (then one UPDATE marks them queued).
ROUND_SIZE = 256
# Queued ids beyond this are left to the sweep: memory stays bounded however
# long Temporal is slow.
MAX_QUEUED = 100_000


@dataclass(frozen=True)
class PendingStart:
    trace_id: uuid.UUID
    organization_id: uuid.UUID
    domain: str


class Dispatcher:
    """One background task per process that starts workflows for stored traces."""

    def __init__(
        self, temporal: Client, settings: Settings, session_factory: async_sessionmaker[AsyncSession]
    ) -> None:
        self._temporal = temporal
        self._settings = settings
        self._sessions = session_factory
        self._queue: asyncio.Queue[PendingStart] | None = None
        self._task: asyncio.Task[None] | None = None
        self.left_to_sweep = 0

    def submit(self, items: list[PendingStart]) -> None:
        """Queue starts; never blocks and never fails (the sweep is the fallback)."""
        queue = self._running_queue()
        for item in items:
            if queue.qsize() >= MAX_QUEUED:
                self.left_to_sweep += 1
                continue
            queue.put_nowait(item)

    def _running_queue(self) -> asyncio.Queue[PendingStart]:
        # Started on first use, in the loop that serves requests.
        if self._queue is None or self._task is None or self._task.done():
            self._queue = self._queue or asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._queue), name="aegis-dispatcher"
            )
        return self._queue

    async def idle(self) -> None:
        """Until every queued start has been attempted (tests, shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Finish what is queued within ``timeout``; the rest stays for the sweep."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self, queue: asyncio.Queue[PendingStart]) -> None:
        limiter = asyncio.Semaphore(START_CONCURRENCY)
        timeout = dt.timedelta(seconds=self._settings.temporal_rpc_timeout_seconds)

        async def start(item: PendingStart) -> bool:
            async with limiter:
                return await start_evaluation(
                    self._temporal,
                    self._settings,
                    item.trace_id,
                    item.organization_id,
                    item.domain,
                    rpc_timeout=timeout,
                )

        while True:
            batch = [await queue.get()]
            while len(batch) < ROUND_SIZE and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                started = await asyncio.gather(*(start(item) for item in batch))
                queued = [item.trace_id for item, ok in zip(batch, started, strict=True) if ok]
                if queued:
                    async with self._sessions() as session:
                        await mark_queued(session, queued)
                        await session.commit()
            except Exception as exc:
                # Those traces stay pending_dispatch; the sweep starts them.
                log.warning("dispatch round of %d traces failed: %s", len(batch), type(exc).__name__)
            finally:
                for _ in batch:
                    queue.task_done()
