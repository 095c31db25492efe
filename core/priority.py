"""The worker's CPU priority: below the API's, on a host they share.

When a worker evaluates a backlog on the cores the API serves from, every
wake-up of an ingestion request (the API's event loop, its PostgreSQL
sessions) waits in the cores' queue behind the worker's bursts, and the
ingestion tail grows tenfold. A worker at a lower priority (a higher
niceness) takes only the CPU the API leaves: ingestion stays fast and
evaluation keeps the rest. In a container of its own (Compose, Kubernetes)
the worker shares no cores with the API's processes, and its niceness
changes nothing.
"""

from __future__ import annotations

import os


def lower_priority(niceness: int) -> None:
    """Raise this process's niceness by ``niceness`` (0 leaves it), before it
    starts any thread: threads inherit it."""
    os.nice(niceness)
