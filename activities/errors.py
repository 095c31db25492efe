"""Error types the workflow treats as final (never retried).

Workflows import this module: it must not pull in SQLAlchemy.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

TRACE_NOT_FOUND = "TraceNotFound"
NON_RETRYABLE = [TRACE_NOT_FOUND]


def trace_not_found() -> ApplicationError:
    # The trace was deleted (or never committed): retrying cannot help.
    return ApplicationError("trace not found", type=TRACE_NOT_FOUND, non_retryable=True)
