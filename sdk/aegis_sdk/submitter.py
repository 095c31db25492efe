"""``BackgroundSubmitter``: send traces from a thread, in batches, off the request path.

``submit()`` only puts the trace on a bounded queue: it never blocks, never
raises, never does I/O. A daemon thread sends what is queued in batches
(``submit_batch``, with the client's retries). When the queue is full —
Aegis unreachable for long, or traces coming faster than they can be sent
— a new trace is dropped and counted, and a warning says how many (never
what). ``flush()`` waits until everything queued was sent; the submitter
flushes itself when the interpreter exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aegis_sdk.client import AegisClient, trace_body

log = logging.getLogger("aegis_sdk")

# A warning about drops at most this often.
DROP_WARNING_INTERVAL_SECONDS = 60.0


@dataclass
class SubmitterStats:
    """Counts since the submitter started."""

    accepted: int = 0  # stored by Aegis
    rejected: int = 0  # refused by Aegis as invalid (the batch answer names the field)
    failed: int = 0  # not stored: every retry of their batch failed
    dropped: int = 0  # never sent: the queue was full, the trace unreadable, or the submitter closed


class BackgroundSubmitter:
    def __init__(
        self,
        client: AegisClient | None = None,
        *,
        max_queue: int = 10_000,
        batch_size: int = 100,
        flush_interval: float = 1.0,
    ) -> None:
        """``client`` defaults to ``AegisClient()`` (AEGIS_API_KEY, AEGIS_BASE_URL)."""
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000 (the batch endpoint's limit)")
        self._client = client or AegisClient()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._start()
        atexit.register(self.close)
        # A process forked after this (gunicorn --preload, Celery prefork)
        # has no sending thread and may inherit a held lock: it starts afresh.
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=self._max_queue)
        self._stats = SubmitterStats()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._last_drop_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="aegis-submitter", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> SubmitterStats:
        with self._lock:
            return SubmitterStats(**vars(self._stats))

    def submit(self, trace: Mapping[str, Any] | Any) -> bool:
        """Queue a trace (a ``Trace`` or a dict of its fields). False when it was dropped."""
        try:
            if self._closed.is_set():
                raise queue.Full
            self._queue.put_nowait(trace_body(trace))
            return True
        except queue.Full:
            self._dropped(1)
        except Exception:  # an invalid trace must not reach the caller's request path
            self._dropped(1)
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued trace was sent (or given up on). False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop; what is still queued
        then, and every later trace, is dropped (and counted)."""
        if self._closed.is_set():
            return
        self.flush(timeout)
        self._closed.set()
        self._thread.join(timeout=1.0)
        left = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            left += 1
        if left:
            self._dropped(left)
        atexit.unregister(self.close)

    # -- the sending thread ------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                first = self._queue.get(timeout=self._flush_interval)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            result = self._client.submit_batch(batch)
        except Exception as exc:
            with self._lock:
                self._stats.failed += len(batch)
            log.warning("aegis: %d traces not stored after retries (%s)", len(batch), type(exc).__name__)
            return
        with self._lock:
            self._stats.accepted += result.accepted
            self._stats.rejected += result.rejected
        if result.rejected:
            fields = sorted({str(e.get("field")) for item in result.results for e in item.errors or []})
            log.warning(
                "aegis: %d traces rejected as invalid (fields: %s)", result.rejected, ", ".join(fields)
            )

    def _dropped(self, count: int) -> None:
        with self._lock:
            self._stats.dropped += count
            dropped = self._stats.dropped
            now = time.monotonic()
            warn = now - self._last_drop_warning >= DROP_WARNING_INTERVAL_SECONDS
            if warn:
                self._last_drop_warning = now
        if warn:
            log.warning("aegis: %d traces dropped so far (queue full or closed)", dropped)
