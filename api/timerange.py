"""The ``since``/``until`` query parameters of the reports (usage, analytics)."""

from __future__ import annotations

import datetime as dt

from api.errors import invalid_range

MAX_RANGE = dt.timedelta(days=366)
DEFAULT_RANGE = dt.timedelta(days=30)
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


def resolve(since: dt.datetime | None, until: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """Validate the range (422 naming the parameter) and fill in the
    defaults: until now, since 30 days before ``until``."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            invalid_range(name, "needs a timezone, e.g. 2026-11-01T00:00:00Z")
        if value is not None and not EARLIEST <= value <= LATEST:
            invalid_range(name, f"must lie between {EARLIEST.year} and {LATEST.year}")
    until = until or dt.datetime.now(dt.UTC)
    since = since or until - DEFAULT_RANGE
    if since >= until or until - since > MAX_RANGE:
        invalid_range("since", "must be before until, at most 366 days earlier")
    return since, until
