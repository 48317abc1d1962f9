"""The catalog as clients see it: models with their offers, providers with their health."""

from __future__ import annotations

from app.catalog.schemas import (
    BreakerOut,
    ModelList,
    ModelOut,
    ObservedOut,
    Offer,
    ProviderList,
    ProviderModelOut,
    ProviderOut,
)
from app.kit.money import format_usd
from app.routing.catalog import Catalog, Offering
from app.routing.pricing import estimate
from app.routing.stats import Observed
from app.runtime import Runtime


def _price_1024(catalog: Catalog, offering: Offering) -> str | None:
    return format_usd(estimate(catalog, offering.price, width=1024, height=1024, num_outputs=1))


def _price_rule(offering: Offering) -> dict[str, object] | None:
    return None if offering.price is None else offering.price.model_dump(mode="json")


def list_models(runtime: Runtime) -> ModelList:
    catalog = runtime.catalog
    return ModelList(
        data=[
            ModelOut(
                id=model_id,
                aliases=list(entry.aliases),
                providers=[
                    Offer(
                        provider=name,
                        configured=name in runtime.providers,
                        upstream_model=offering.model,
                        price_1024_usd=_price_1024(catalog, offering),
                        price=_price_rule(offering),
                    )
                    for name, offering in entry.providers.items()
                ],
            )
            for model_id, entry in catalog.models.items()
        ]
    )


def _observed(observed: Observed, window_s: float) -> ObservedOut:
    return ObservedOut(
        window_s=window_s,
        samples=observed.samples,
        p50_s=None if observed.p50_s is None else round(observed.p50_s, 3),
        p95_s=None if observed.p95_s is None else round(observed.p95_s, 3),
        success_rate=None if observed.success_rate is None else round(observed.success_rate, 4),
        in_flight=observed.in_flight,
    )


async def list_providers(runtime: Runtime) -> ProviderList:
    catalog = runtime.catalog
    configured = list(runtime.providers)
    names = configured + sorted(
        {p for e in catalog.models.values() for p in e.providers} - set(configured)
    )
    views = await runtime.health.breaker_views(configured)
    stats = await runtime.health.observed(wait=True)
    window = stats.window_s
    out = []
    for name in names:
        view = views.get(name)
        breaker = None
        if view is not None:
            breaker = BreakerOut(
                state=view.state.value,
                retry_in_s=round(view.retry_in, 3),
                consecutive_failures=view.consecutive_failures,
                window_calls=view.window_calls,
                window_failures=view.window_failures,
            )
        models = [
            ProviderModelOut(
                model=model_id,
                upstream_model=offering.model,
                price_1024_usd=_price_1024(catalog, offering),
                price=_price_rule(offering),
                observed=_observed(stats.route(name, model_id), window),
            )
            for model_id, entry in catalog.models.items()
            if (offering := entry.providers.get(name)) is not None
        ]
        out.append(
            ProviderOut(
                name=name,
                configured=name in runtime.providers,
                breaker=breaker,
                observed=_observed(stats.provider(name), window),
                models=models,
            )
        )
    return ProviderList(data=out)
