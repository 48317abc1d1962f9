"""Route planning: the ordered candidates that can serve one request, with their estimates.

1. providers that serve the model and are configured;
2. that can take this request (input images, loras, size, format, outputs);
3. that the request's ``routing`` allows, within ``max_cost_usd``, and whose breaker is not open;
4. sorted by strategy: ``cheapest`` (estimate; ties by observed p50, then success rate, then
   catalog order; unpriced last), ``fastest`` (observed p50, then success rate; providers never
   observed last), ``ordered`` (``routing.providers`` order, else the catalog's).

Health reaches the planner as plain callbacks (``is_open``, ``latency_p50``, ``success_rate``),
so planning stays a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.jobs.normalise import NormalisedInput
from app.jobs.schemas import Routing
from app.kit.money import usd_to_micros
from app.providers.base import Capabilities, Provider
from app.routing.catalog import Catalog
from app.routing.pricing import estimate

HEALTH_REASON = "circuit breaker open"


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: str
    upstream_model: str
    estimate_micros: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "estimate_micros": self.estimate_micros,
        }


@dataclass(frozen=True, slots=True)
class RoutePlan:
    candidates: tuple[Candidate, ...]
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def unhealthy(self) -> list[str]:
        """Providers that passed every other filter but whose breaker is open.

        Health is checked last, so these could serve the request once they recover: with no
        candidate left, that makes the answer "retry later" (503), not "impossible" (422).
        """
        return [name for name, reason in self.excluded.items() if reason == HEALTH_REASON]


def capability_problem(caps: Capabilities, request: NormalisedInput) -> str | None:
    if len(request.input_images) > caps.max_input_images:
        return f"takes at most {caps.max_input_images} input images"
    if len(request.loras) > caps.max_loras:
        if not caps.max_loras:
            return "does not take loras"
        return f"takes at most {caps.max_loras} loras"
    for side in (request.width, request.height):
        if not caps.min_side <= side <= caps.max_side:
            return f"sizes must be within {caps.min_side}..{caps.max_side}"
    if request.output_format not in caps.formats:
        return f"cannot produce {request.output_format}"
    if request.num_outputs > caps.max_outputs:
        return f"produces at most {caps.max_outputs} images per job"
    return None


def plan_route(
    catalog: Catalog,
    providers: Mapping[str, Provider],
    model_id: str,
    request: NormalisedInput,
    routing: Routing,
    *,
    input_megapixels: tuple[float, ...] = (),
    is_open: Callable[[str], bool] = lambda _: False,
    latency_p50: Callable[[str], float | None] = lambda _: None,
    success_rate: Callable[[str], float | None] = lambda _: None,
) -> RoutePlan:
    entry = catalog.models[model_id]
    max_cost = usd_to_micros(routing.max_cost_usd) if routing.max_cost_usd is not None else None
    allowed = set(routing.providers) if routing.providers is not None else None
    candidates: list[Candidate] = []
    excluded: dict[str, str] = {}
    for name, offering in entry.providers.items():
        provider = providers.get(name)
        if provider is None:
            excluded[name] = "not configured"
            continue
        if allowed is not None and name not in allowed:
            excluded[name] = "not in routing.providers"
            continue
        if name in routing.exclude:
            excluded[name] = "in routing.exclude"
            continue
        problem = capability_problem(provider.capabilities(offering.model), request)
        if problem is not None:
            excluded[name] = problem
            continue
        cost = estimate(
            catalog,
            offering.price,
            width=request.width,
            height=request.height,
            num_outputs=request.num_outputs,
            input_megapixels=input_megapixels,
            loras=len(request.loras),
        )
        if max_cost is not None and (cost is None or cost > max_cost):
            excluded[name] = "unpriced" if cost is None else "above routing.max_cost_usd"
            continue
        if is_open(name):
            excluded[name] = HEALTH_REASON
            continue
        candidates.append(Candidate(name, offering.model, cost))
    for name in routing.providers or ():
        if name not in entry.providers:
            excluded[name] = "does not serve this model"
    order = list(entry.providers)
    if routing.strategy == "ordered" and routing.providers:
        order = list(routing.providers)

    def rank(c: Candidate) -> tuple[Any, ...]:
        position = order.index(c.provider) if c.provider in order else len(order)
        p50 = latency_p50(c.provider)
        speed = p50 if p50 is not None else float("inf")
        rate = success_rate(c.provider)
        unreliability = -rate if rate is not None else 0.0
        if routing.strategy == "cheapest":
            unpriced = c.estimate_micros is None
            return (unpriced, c.estimate_micros or 0, speed, unreliability, position)
        if routing.strategy == "fastest":
            return (speed, unreliability, position)
        return (position,)

    candidates.sort(key=rank)
    return RoutePlan(tuple(candidates), excluded)
