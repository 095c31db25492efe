"""Python SDK for Metronis Aegis.

- ``AegisClient`` / ``AsyncAegisClient``: submit traces, read evaluations, label, list.
- ``BackgroundSubmitter``: send traces from a thread in batches, never blocking the caller.
- ``wrap_openai`` / ``wrap_anthropic``: record every completion of a client as a trace.

Depends on httpx and pydantic only.
"""

from aegis_sdk._errors import AegisAPIError, AegisError, AegisTimeout
from aegis_sdk.client import AegisClient, AsyncAegisClient
from aegis_sdk.models import (
    Accepted,
    BatchAccepted,
    Evaluation,
    Issue,
    LabelResult,
    Page,
    Trace,
    TraceSummary,
)
from aegis_sdk.submitter import BackgroundSubmitter, SubmitterStats
from aegis_sdk.wrappers import wrap_anthropic, wrap_openai

__all__ = [
    "Accepted",
    "AegisAPIError",
    "AegisClient",
    "AegisError",
    "AegisTimeout",
    "AsyncAegisClient",
    "BackgroundSubmitter",
    "BatchAccepted",
    "Evaluation",
    "Issue",
    "LabelResult",
    "Page",
    "SubmitterStats",
    "Trace",
    "TraceSummary",
    "wrap_anthropic",
    "wrap_openai",
]
