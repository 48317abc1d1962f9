"""Planning a route for a request at admission, or refusing it with the reasons.

Health comes from ``Runtime.health``'s in-process snapshots (breakers at most
``breaker_view_ttl_s`` old, statistics at most ``stats_ttl_s``): admission never waits on a
per-request query. Dispatch asks the shared breaker again before it submits.
"""

from __future__ import annotations

import math

from app.errors import NoProviderAvailable, NoRoute
from app.jobs.normalise import NormalisedInput
from app.jobs.schemas import CreateImageJob
from app.routing.breaker import State
from app.routing.planner import RoutePlan, plan_route
from app.routing.pricing import input_megapixels
from app.runtime import Runtime


async def plan_for(
    runtime: Runtime, model_id: str, body: CreateImageJob, request: NormalisedInput
) -> RoutePlan:
    views = await runtime.health.breaker_views(list(runtime.providers))
    observed = await runtime.health.observed()

    def is_open(provider: str) -> bool:
        return views[provider].state is State.OPEN

    plan = plan_route(
        runtime.catalog,
        runtime.providers,
        model_id,
        request,
        body.routing,
        input_megapixels=input_megapixels(request.input_images),
        is_open=is_open,
        latency_p50=lambda provider: observed.route(provider, model_id).p50_s,
        success_rate=lambda provider: observed.route(provider, model_id).success_rate,
    )
    if plan.candidates:
        return plan
    reasons = [{"provider": name, "reason": why} for name, why in plan.excluded.items()]
    if plan.unhealthy:
        soonest = min(views[name].retry_in for name in plan.unhealthy)
        raise NoProviderAvailable(
            "every provider that could serve this request is unhealthy; retry shortly",
            headers={"Retry-After": str(max(1, math.ceil(soonest)))},
            extra={"excluded": reasons},
        )
    detail = "; ".join(f"{r['provider']}: {r['reason']}" for r in reasons) or "no providers"
    raise NoRoute(f"no provider can serve this request ({detail})", extra={"excluded": reasons})
