"""``imagegate``: serve | api | worker | migrate | keys | teams."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from app.admin.cli import keys_cli, teams_cli
from app.config import ConfigError, Settings
from app.webhooks.cli import webhooks_cli

cli = typer.Typer(
    help="imagegate: one job API for many image-generation upstreams.", no_args_is_help=True
)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(teams_cli, name="teams")
cli.add_typer(webhooks_cli, name="webhooks")
console = Console(stderr=True)


def _settings() -> Settings:
    settings = Settings()
    try:
        settings.signing_key  # noqa: B018 - fail fast on a missing secret
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    return settings


def _serve_http(settings: Settings, host: str | None, port: int | None, worker: bool) -> None:
    from app.main import create_app

    config = uvicorn.Config(
        create_app(settings, run_worker=worker),
        host=host or settings.host,
        port=port if port is not None else settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=settings.http_keepalive_s,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
    )
    uvicorn.Server(config).run()


Host = Annotated[str | None, typer.Option(help="Bind address (default IMAGEGATE_HOST).")]
Port = Annotated[int | None, typer.Option(help="Port (default IMAGEGATE_PORT).")]


@cli.command()
def serve(host: Host = None, port: Port = None) -> None:
    """API and worker in one process (the embedded default)."""
    _serve_http(_settings(), host, port, worker=True)


@cli.command()
def api(host: Host = None, port: Port = None) -> None:
    """The HTTP API only (run workers separately)."""
    _serve_http(_settings(), host, port, worker=False)


@cli.command()
def worker() -> None:
    """A worker only: dispatch, poll, finalize, reap."""
    settings = _settings()
    asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    from app.logging import configure_logging
    from app.metrics.server import worker_metrics
    from app.runtime import open_runtime
    from app.worker.runner import Worker

    configure_logging(settings.log_format, settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings) as runtime:
        if settings.is_sqlite:
            from app.setup import migrate

            await asyncio.to_thread(migrate, settings.resolved_database_url)
        async with worker_metrics(runtime):  # IMAGEGATE_WORKER_METRICS_PORT, when set
            await Worker(runtime).run(stop)


@cli.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Upgrade the database schema (alembic upgrade)."""
    from app.setup import migrate as run_migrations

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_migrations(settings.resolved_database_url, revision)
    console.print(f"database at [bold]{revision}[/bold]")


def main() -> None:
    cli()
