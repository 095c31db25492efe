"""Configuration, read from the environment with the ``AEGIS_`` prefix.

Every process (API, worker, CLI) builds one :class:`Settings`; nothing else
reads environment variables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from evaluators.judge.config import ModelPrice
from models.schemas import DEFAULT_JUDGE_TASK_QUEUE, DEFAULT_TRAINING_TASK_QUEUE


class Settings(BaseSettings):
    # Empty variables count as unset: compose passes `${VAR:-}` through as "".
    model_config = SettingsConfigDict(
        env_prefix="AEGIS_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # --- where things are -------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the application database (postgresql+asyncpg://...). "
        "Required by `aegis api`, `aegis worker` and `aegis migrate`; `aegis dev` starts an "
        "embedded PostgreSQL when unset.",
    )
    temporal_address: str | None = Field(
        default=None,
        description="host:port of the Temporal frontend. `aegis dev` starts a dev server when unset.",
    )
    temporal_namespace: str = "default"
    temporal_ui_url: str | None = Field(
        default=None,
        description="Base URL of the Temporal web UI, for links to a trace's workflow "
        "(`aegis dev` sets its own).",
    )
    task_queue: str = "aegis-evaluations"
    home: Path = Field(default=Path(".aegis"), description="Data folder of `aegis dev`.")
    dev_temporal_port: int = Field(
        default=7233, description="gRPC port of the dev server `aegis dev` starts."
    )
    dev_temporal_ui_port: int = Field(default=8233, description="Web UI port of that dev server.")

    # --- API ----------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    allow_signup: bool = Field(default=False, description="Open POST /api/v1/organizations.")
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token that may always create organisations."
    )
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    api_rate_limit_per_minute: int = Field(
        default=6000,
        ge=0,
        description="Requests per minute per API key in each API process (bursts of a sixth); 0: no limit.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed to call the API, JSON: ["https://console.example.com"]; '
        "empty: CORS off.",
    )
    max_batch_size: int = Field(
        default=1000, ge=1, le=1000
    )  # one INSERT stays under the bind-parameter limit
    temporal_rpc_timeout_seconds: float = Field(
        default=3.0, gt=0, description="Bound on how long ingestion waits for Temporal."
    )

    # --- worker -------------------------------------------------------------
    worker_max_concurrent_activities: int = Field(default=64, ge=1)
    worker_max_concurrent_workflow_tasks: int = Field(default=64, ge=1)
    worker_graceful_shutdown_seconds: float = Field(default=20.0, ge=0)
    worker_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How far below normal CPU priority `aegis worker` runs (core/priority.py).",
    )
    dispatch_sweep_seconds: int = Field(
        default=60, ge=1, description="How often traces stuck in pending_dispatch are re-dispatched."
    )
    classifier_training_cron: str = Field(
        default="0 3 * * *", description="When the schedule retrains Tier 2 models (cron, UTC)."
    )
    console_secure_cookies: bool = Field(
        default=True,
        description="Mark the web console's cookies Secure (HTTPS only; browsers count localhost as secure). "
        "Turn off only to serve the console over plain HTTP on another host.",
    )
    events_keepalive_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often an idle events stream sends a comment line, so proxies keep it open.",
    )
    retention_cron: str = Field(
        default="15 4 * * *",
        description="When the schedule deletes traces past their organisation's retention (cron, UTC).",
    )
    classifier_training_min_new_labels: int = Field(
        default=20,
        ge=1,
        description="Judge or expert verdicts since an organisation's domain last trained, to train again.",
    )

    worker_queues: Literal["all", "evaluations", "judge", "training"] = Field(
        default="all",
        description="Which task queues `aegis worker` serves: all, or one of them to scale them apart.",
    )
    training_task_queue: str = Field(
        default=DEFAULT_TRAINING_TASK_QUEUE,
        description="Task queue of Tier 2 training (only the workers that serve it load scikit-learn).",
    )

    # --- Tier 3: the LLM judge ------------------------------------------------
    judge_task_queue: str = DEFAULT_JUDGE_TASK_QUEUE
    judge_provider: Literal["none", "openai", "anthropic", "openai_compatible"] = Field(
        default="none",
        description="Deployment-wide judge for organisations without their own; `none` leaves Tier 3 "
        "not configured.",
    )
    judge_model: str = "gpt-4o-mini"
    judge_base_url: str | None = Field(
        default=None, description="API root; required for `openai_compatible` (vLLM, Ollama, gateways)."
    )
    judge_api_key: SecretStr | None = Field(default=None, description="Key of the deployment-wide judge.")
    allow_private_urls: bool = Field(
        default=False,
        description="Let organisations point their judge or alert webhooks at localhost or private "
        "addresses (true in `aegis dev`, for a local model server or receiver).",
    )
    judge_temperature: float = Field(default=0.0, ge=0, le=2)
    judge_max_tokens: int = Field(default=1024, ge=1, le=32000)
    judge_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Per provider request; the activity allows two."
    )
    judge_max_calls_per_second: float = Field(
        default=20.0, gt=0, description="Server-side rate limit of the judge task queue (all workers)."
    )
    judge_max_concurrent_calls: int = Field(default=16, ge=1, description="Judge calls in flight per worker.")
    judge_org_calls_per_minute: int = Field(
        default=600, ge=1, description="Per-organisation judge rate unless the organisation sets its own."
    )
    judge_monthly_budget_usd: float | None = Field(
        default=None, ge=0, description="Default monthly judge spend cap per organisation (none: no cap)."
    )
    judge_prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='Price table overrides, JSON: {"model": {"input_per_million_usd": .., '
        '"output_per_million_usd": ..}}; merged over the built-in list prices.',
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts organisations' provider API keys at rest "
        "(`aegis dev` creates one in its data folder).",
    )
    payload_key: SecretStr | None = Field(
        default=None,
        description="Encrypts every Temporal payload (AES-256-GCM) as `<key id>:<base64 of 32 bytes>`; "
        "set the same value on the API and every worker.",
    )
    payload_old_keys: SecretStr | None = Field(
        default=None,
        description="Earlier payload keys, comma-separated `<key id>:<base64>`, kept after a rotation "
        "to read histories they encrypted.",
    )
    api_key_pepper: SecretStr | None = Field(
        default=None,
        description="Server-side secret mixed into every API-key hash (HMAC-SHA256), so a copy of "
        "the database alone cannot be used to check guessed keys. Keys hashed before it was set "
        "are re-hashed on their next use (`aegis dev` creates one in its data folder).",
    )

    # --- database pool ------------------------------------------------------
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one JSON object per log line (ts, level, logger, message and the "
        "trace, workflow and organisation ids a line carries), for log collectors.",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port on which `aegis worker` serves Prometheus metrics at /metrics (Aegis's "
        "counters and the Temporal SDK's), on all interfaces; 0: off.",
    )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("AEGIS_DATABASE_URL is not set")
        return self.database_url

    def require_temporal_address(self) -> str:
        if not self.temporal_address:
            raise RuntimeError("AEGIS_TEMPORAL_ADDRESS is not set")
        return self.temporal_address


@lru_cache
def get_settings() -> Settings:
    return Settings()


def workflow_url(settings: Settings, workflow_id: str) -> str | None:
    """Link to a workflow in the Temporal web UI, when its URL is configured."""
    if not settings.temporal_ui_url:
        return None
    base = settings.temporal_ui_url.rstrip("/")
    return f"{base}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"
