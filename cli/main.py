"""``aegis``: run the platform (dev), or one of its production processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

import typer

from core.logging import configure_logging
from core.settings import get_settings

app = typer.Typer(help="Metronis Aegis: tiered evaluation of production LLM traces.", no_args_is_help=True)


@app.command()
def dev() -> None:
    """Run everything locally: PostgreSQL, Temporal dev server + UI, API and a worker."""
    from cli.dev import run_dev

    raise typer.Exit(run_dev(get_settings()))


@app.command()
def api(
    host: str = typer.Option(None, help="Bind address (default AEGIS_API_HOST)."),
    port: int = typer.Option(None, help="Port (default AEGIS_API_PORT)."),
    workers: int = typer.Option(1, help="Uvicorn worker processes."),
) -> None:
    """Serve the REST API (uvicorn)."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    settings.require_database_url()
    settings.require_temporal_address()
    with api_metrics_directory(workers):
        uvicorn.run(
            "api.main:app",
            host=host or settings.api_host,
            port=port or settings.api_port,
            workers=workers,
            log_level=settings.log_level.lower(),
            # JSON: no uvicorn handlers of its own, so its lines reach the root
            # logger's JSON handler like every other.
            **({"log_config": None} if settings.log_format == "json" else {}),
            # Trace ids in paths are not sensitive, but keep access logs off by
            # default: one line per request is noise at ingestion rates.
            access_log=False,
            # Open event streams never end by themselves: stop waiting for them.
            timeout_graceful_shutdown=5,
        )


@contextlib.contextmanager
def api_metrics_directory(workers: int) -> Iterator[None]:
    """With several uvicorn processes, a scrape of /metrics reaches one of
    them: prometheus_client's multiprocess mode (its values in files of a
    shared directory, set before the processes start) lets each answer for
    all of them."""
    if workers <= 1:
        yield
        return
    from core.metrics import MULTIPROCESS_DIR_ENV

    with tempfile.TemporaryDirectory(prefix="aegis-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR_ENV] = directory
        yield


@app.command()
def worker() -> None:
    """Run a Temporal worker (evaluation workflows and activities)."""
    from core.priority import lower_priority
    from core.worker import run_worker

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    settings.require_database_url()
    settings.require_temporal_address()
    lower_priority(settings.worker_niceness)  # ingestion first, on a host the API shares
    asyncio.run(run_worker(settings))


@app.command()
def train(
    organization: str = typer.Option(..., help="Organisation id."),
    domain: str = typer.Option(..., help="Domain pack name."),
    seed: int = typer.Option(0, help="Random seed of the training run."),
    wait: bool = typer.Option(True, help="Wait for the outcome (or print the workflow id and return)."),
) -> None:
    """Train the Tier 2 model of one organisation's domain (the TrainClassifier workflow)."""
    import uuid

    from core.temporal import connect
    from models.schemas import TrainClassifierInput, TrainingResult, training_workflow_id

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        organization_id = uuid.UUID(organization)
    except ValueError:
        raise typer.BadParameter("not an organisation id", param_hint="--organization") from None

    async def run() -> str:
        client = await connect(settings)
        handle = await client.start_workflow(
            "TrainClassifier",
            TrainClassifierInput(
                organization_id=organization_id,
                domain=domain,
                seed=seed,
                training_task_queue=settings.training_task_queue,
            ),
            id=training_workflow_id(organization_id, domain, uuid.uuid4()),
            task_queue=settings.task_queue,
            result_type=TrainingResult,
        )
        if not wait:
            return handle.id
        result: TrainingResult = await handle.result()
        return result.model_dump_json()

    typer.echo(asyncio.run(run()))
    # A short-lived process that used a Temporal client can abort while the
    # interpreter tears down (the SDK's native threads outlive it; known
    # upstream as temporalio/sdk-python#300): nothing is left to clean up,
    # so leave without the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def migrate(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply database migrations (Alembic)."""
    from core.migrations import upgrade_database

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    upgrade_database(settings.require_database_url(), revision)
    typer.echo(f"database at revision {revision}")


if __name__ == "__main__":
    app()
