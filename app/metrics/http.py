"""HTTP request metrics, observed by the request middleware (``app.web.middleware``).

Requests are labelled by route *template* (``/v1/images/{job_id}``), never by raw path, so the
number of series stays bounded whatever clients send; a path no route matches counts as
``unmatched`` and an unknown method as ``other``.
"""

from __future__ import annotations

from starlette.types import Scope

from app.metrics.registry import HTTP_REQUEST_SECONDS

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    route = scope.get("route")  # set by the router on the shared scope once a route matched
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    method = scope.get("method", "GET")
    HTTP_REQUEST_SECONDS.labels(
        method if method in METHODS else "other", route_template(scope), str(status)
    ).observe(seconds)
