"""Temporal client construction: one data converter (pydantic, encrypted when configured) everywhere."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime

from core.codec import data_converter
from core.settings import Settings


async def connect(
    settings: Settings, *, address: str | None = None, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """Connect to Temporal.

    ``lazy=True`` returns at once and connects on first use, so the API can
    start (and keep accepting traces into PostgreSQL) while Temporal is down.
    ``runtime``: the process's Temporal runtime when it is not the default
    (the worker's, which serves SDK metrics); workers use their client's.
    """
    return await Client.connect(
        address or settings.require_temporal_address(),
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        lazy=lazy,
        runtime=runtime,
    )
