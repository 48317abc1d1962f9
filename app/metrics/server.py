"""The metrics port of a worker-only process (``imagegate worker``).

A worker serves no HTTP API, so with ``IMAGEGATE_WORKER_METRICS_PORT`` set it serves
``/metrics`` (and ``/healthz``, ``/readyz`` for probes) on its own small uvicorn server, in the
worker's event loop and on the worker's ``Runtime``. The server leaves signal handling to the
worker: it stops when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import structlog
import uvicorn
from fastapi import FastAPI

from app.runtime import Runtime

log = structlog.get_logger(__name__)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the worker owns SIGTERM/SIGINT


def metrics_app(runtime: Runtime) -> FastAPI:
    from app.errors import install_error_handlers
    from app.metrics.endpoints import router
    from app.web.health import router as health_router

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(health_router)
    app.state.runtime = runtime
    return app


@contextlib.asynccontextmanager
async def worker_metrics(runtime: Runtime) -> AsyncIterator[int | None]:
    """Serve the worker's metrics while the block runs; yields the bound port (None: off)."""
    settings = runtime.settings
    if settings.worker_metrics_port is None:
        yield None
        return
    config = uvicorn.Config(
        metrics_app(runtime),
        host=settings.worker_metrics_host,
        port=settings.worker_metrics_port,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(), name="worker-metrics")
    while not server.started:
        if task.done():  # e.g. the port is taken: fail the start loudly
            await task
            raise RuntimeError(f"the worker metrics server did not start on {config.port}")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    log.info("worker metrics listening", host=settings.worker_metrics_host, port=port)
    try:
        yield port
    finally:
        server.should_exit = True
        await task
