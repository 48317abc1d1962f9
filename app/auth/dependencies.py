"""FastAPI dependencies: the calling key's ``Principal``, its rate limit, per-route scope checks.

Rate limits count the requests that create or change something: every ``POST``, ``PATCH``,
``PUT`` and ``DELETE`` authenticated with an API key (job creation and cancellation, admin
changes), whether or not the key holds the route's scope. Reads (``GET``/``HEAD``: a job's status,
its event stream, listings, usage) are not counted, so a browser app polling its jobs never eats
into what it may create. Routes without an API key (signed file URLs, provider webhooks, health,
metrics, CORS preflights) are never limited. ``authenticate`` runs once per request even when
several dependencies use it (FastAPI caches it), so a request is never counted twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request

from app.auth.principal import Principal
from app.auth.ratelimit import Limit, RateLimited
from app.config import Settings
from app.errors import Forbidden, Unauthorized
from app.web.deps import get_runtime_of

log = structlog.get_logger(__name__)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="imagegate"'}
RATE_LIMIT_STATE = "ratelimit"  # request.state attribute read by ``RateLimitHeaders``
LIMITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key") or None


def effective_limit(principal: Principal, settings: Settings) -> Limit | None:
    """The key's own rate (0 = unlimited) over the server default; burst defaults to the rate."""
    per_minute = principal.rate_limit_per_minute
    if per_minute is None:
        per_minute = settings.rate_limit_per_minute
    if not per_minute:
        return None
    burst = principal.rate_limit_burst or settings.rate_limit_burst or per_minute
    return Limit(per_minute, burst)


async def authenticate(request: Request) -> Principal:
    # The runtime is read here rather than injected: one dependency less for FastAPI to solve
    # on every authenticated request.
    runtime = get_runtime_of(request)
    key = presented_key(request)
    if key is None:
        raise Unauthorized(
            "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers=_CHALLENGE,
        )
    principal = await runtime.keys.verify(key)
    if principal is None:
        raise Unauthorized("the API key is invalid, expired or revoked", headers=_CHALLENGE)
    structlog.contextvars.bind_contextvars(team_id=principal.team_id, key_id=principal.key_id)
    limit = effective_limit(principal, runtime.settings)
    if limit is not None and request.method in LIMITED_METHODS:
        decision = await runtime.limiter.acquire(principal.key_id, limit)
        if decision is not None and not decision.allowed:
            log.info("rate limited", retry_after_s=round(decision.retry_after_s, 3))
            raise RateLimited(
                f"this API key may send {limit.per_minute} requests a minute with bursts of "
                f"{limit.burst}; retry in {decision.retry_after_s:.1f} s",
                headers=decision.headers(),
                extra={"retry_after_s": round(decision.retry_after_s, 3)},
            )
        if decision is not None:
            setattr(request.state, RATE_LIMIT_STATE, decision)
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.allows(scope):
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        return principal

    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the route audit
    return dependency


AnyKey = Annotated[Principal, Depends(authenticate)]
ImagesWriter = Annotated[Principal, Depends(require("images:write"))]
ImagesReader = Annotated[Principal, Depends(require("images:read"))]
UsageReader = Annotated[Principal, Depends(require("usage:read"))]
Admin = Annotated[Principal, Depends(require("admin"))]
