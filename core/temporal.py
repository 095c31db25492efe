"""Temporal client construction: one data converter (pydantic) everywhere."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.settings import Settings


async def connect(settings: Settings, *, address: str | None = None, lazy: bool = False) -> Client:
    """Connect to Temporal.

    ``lazy=True`` returns at once and connects on first use, so the API can
    start (and keep accepting traces into PostgreSQL) while Temporal is down.
    """
    return await Client.connect(
        address or settings.require_temporal_address(),
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )
