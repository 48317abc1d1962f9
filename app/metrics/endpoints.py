"""``GET /metrics``: this process's Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.auth.dependencies import presented_key
from app.errors import Unauthorized
from app.kit.crypto import constant_time_equal
from app.metrics import jobs as _jobs  # noqa: F401 - registers the job counters' session hooks
from app.metrics.scrape import refresh, render
from app.web.deps import RuntimeDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process (text format, or OpenMetrics when asked for)."""
    token = runtime.settings.metrics_token
    if token is not None:
        presented = presented_key(request) or ""
        if not constant_time_equal(presented, token.get_secret_value()):
            raise Unauthorized(
                "/metrics needs 'Authorization: Bearer <IMAGEGATE_METRICS_TOKEN>'",
                headers={"WWW-Authenticate": 'Bearer realm="imagegate-metrics"'},
            )
    await refresh(runtime)
    body, content_type = render(request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})
