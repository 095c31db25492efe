"""Apply Alembic migrations from code (used by `aegis migrate`, `aegis dev` and tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def migrations_root() -> Path:
    """The folder holding alembic.ini: the source checkout, else the working
    directory (the container image installs the package and copies the
    migrations beside it)."""
    for candidate in (PROJECT_ROOT, Path.cwd()):
        if (candidate / "alembic.ini").is_file():
            return candidate
    raise RuntimeError("alembic.ini not found: run from the project folder")


def alembic_config(database_url: str) -> Config:
    root = migrations_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    config.attributes["database_url"] = database_url
    # Keep the caller's logging configuration.
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Blocking: run it in a thread from async code (env.py runs its own loop)."""
    command.upgrade(alembic_config(database_url), revision)
