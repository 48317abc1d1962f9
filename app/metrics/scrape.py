"""What a scrape computes on the spot, and the exposition itself.

Counters and histograms are kept as things happen; two figures are read when Prometheus asks:
the jobs in flight (one grouped count over the job store's active-stage index) and each
provider's breaker state (from ``Runtime.health``'s snapshot, at most ``breaker_view_ttl_s``
old). A figure that cannot be read within ``REFRESH_TIMEOUT_S`` is left out of that scrape (its
series disappear rather than show stale values) and counted in
``imagegate_metrics_refresh_errors_total``.
"""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from app.metrics.registry import (
    BREAKER_LEVELS,
    BREAKER_STATE,
    JOBS_IN_FLIGHT,
    SCRAPE_ERRORS,
    UNROUTED,
)
from app.metrics.repository import MetricsRepository
from app.runtime import Runtime

log = structlog.get_logger(__name__)

REFRESH_TIMEOUT_S = 2.0


async def refresh(runtime: Runtime) -> None:
    """Update the scrape-time gauges; never raises (a scrape must answer even with the DB down)."""
    await asyncio.gather(_jobs_in_flight(runtime), _breakers(runtime))


async def _jobs_in_flight(runtime: Runtime) -> None:
    try:
        async with asyncio.timeout(REFRESH_TIMEOUT_S), runtime.sessions() as session:
            rows = await MetricsRepository(session).jobs_in_flight()
    except Exception as exc:
        _failed("jobs_in_flight", exc)
        JOBS_IN_FLIGHT.clear()
        return
    # No await from here on: a concurrent scrape never renders a half-updated gauge.
    JOBS_IN_FLIGHT.clear()
    for status, stage, provider, count in rows:
        JOBS_IN_FLIGHT.labels(status, stage, provider or UNROUTED).set(count)


async def _breakers(runtime: Runtime) -> None:
    names = sorted(runtime.providers)
    try:
        async with asyncio.timeout(REFRESH_TIMEOUT_S):
            views = await runtime.health.breaker_views(names)
    except Exception as exc:
        _failed("breakers", exc)
        BREAKER_STATE.clear()
        return
    BREAKER_STATE.clear()
    for name in names:
        BREAKER_STATE.labels(name).set(BREAKER_LEVELS.get(views[name].state.value, 0))


def _failed(source: str, exc: BaseException) -> None:
    SCRAPE_ERRORS.labels(source).inc()
    log.warning("metrics refresh failed", source=source, error=type(exc).__name__)


def render(accept: str | None) -> tuple[bytes, str]:
    """The exposition in the format the scraper asked for (Prometheus text or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type
