"""Errors the SDK raises."""

from __future__ import annotations

from typing import Any


class AegisError(Exception):
    """Base class of everything the SDK raises."""


class AegisAPIError(AegisError):
    """The API answered with an error: ``{"error": {"code", "message", "details"}}``."""

    def __init__(self, status_code: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details


class AegisTimeout(AegisError):
    """``wait_for_evaluation`` gave up before the trace reached a final status."""
