"""Logging setup. Log ids and counts, never trace text, keys or PII."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Literal

LogFormat = Literal["text", "json"]

# The only `extra=` attributes a JSON line carries: ids, never text. Any
# other attribute of a record (its raw args included) stays out of the line.
ID_FIELDS = ("trace_id", "organization_id", "workflow_id", "run_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and the ids the
    record carries (passed as ``extra=``, or set by the Temporal SDK's
    workflow and activity loggers)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        temporal = _temporal_ids(record)
        for name in ID_FIELDS:
            value = getattr(record, name, None) or temporal.get(name)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def _temporal_ids(record: logging.LogRecord) -> dict[str, object]:
    """Workflow and run id from the details the Temporal SDK's loggers attach."""
    for attribute in ("temporal_activity", "temporal_workflow"):
        details = getattr(record, attribute, None)
        if isinstance(details, Mapping):
            return {
                "workflow_id": details.get("workflow_id"),
                "run_id": details.get("run_id") or details.get("workflow_run_id"),
            }
    return {}


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    # A no-op when the root logger has a handler already (`aegis api` configures
    # it before uvicorn imports api.main, which calls this again).
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # The Temporal SDK logs workflow/activity info at INFO; keep it quieter.
    logging.getLogger("temporalio").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
