"""Configuration, read from the environment with the ``AEGIS_`` prefix.

Every process (API, worker, CLI) builds one :class:`Settings`; nothing else
reads environment variables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AEGIS_", env_file=".env", extra="ignore")

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
    dispatch_sweep_seconds: int = Field(
        default=60, ge=1, description="How often traces stuck in pending_dispatch are re-dispatched."
    )

    # --- database pool ------------------------------------------------------
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)

    log_level: str = "INFO"

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
