"""Per-API-key request rate limiting, in the API process.

A token bucket per key: ``per_minute`` requests a minute on average, bursts
of a sixth of that. Each API process keeps its own buckets, so with N
processes a key gets up to N times the rate; the limit is there to stop one
client from flooding the service, not to meter it exactly.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict

# Keys remembered at once; the least recently seen is forgotten first.
MAX_KEYS = 100_000


class KeyRateLimiter:
    def __init__(self, per_minute: int) -> None:
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, per_minute / 6.0)
        self._buckets: OrderedDict[uuid.UUID, tuple[float, float]] = OrderedDict()

    def take(self, key_id: uuid.UUID, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, updated = self._buckets.pop(key_id, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - updated) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key_id] = (tokens, now)
        if len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)
        return wait
