"""Shapes of ``GET /v1/models`` and ``GET /v1/providers``. Money is a decimal string in USD."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

BreakerStateName = Literal["closed", "open", "half_open"]


class Offer(BaseModel):
    """One provider serving one model."""

    provider: str
    configured: bool
    upstream_model: str
    price_1024_usd: str | None = Field(
        description="today's price of one 1024x1024 text-to-image job; null when unpriced"
    )
    price: dict[str, Any] | None = Field(description="the catalog's price rule, null if unknown")


class ModelOut(BaseModel):
    id: str
    aliases: list[str]
    providers: list[Offer]


class ModelList(BaseModel):
    data: list[ModelOut]


class ObservedOut(BaseModel):
    """Over the recent window: finished attempts judged, time to completion, success rate."""

    window_s: float
    samples: int
    p50_s: float | None
    p95_s: float | None
    success_rate: float | None
    in_flight: int


class BreakerOut(BaseModel):
    state: BreakerStateName
    retry_in_s: float = Field(description="seconds until an open breaker admits a probe")
    consecutive_failures: int
    window_calls: int
    window_failures: int


class ProviderModelOut(BaseModel):
    model: str
    upstream_model: str
    price_1024_usd: str | None
    price: dict[str, Any] | None
    observed: ObservedOut


class ProviderOut(BaseModel):
    name: str
    configured: bool
    breaker: BreakerOut | None = Field(description="null for a provider that is not configured")
    observed: ObservedOut
    models: list[ProviderModelOut]


class ProviderList(BaseModel):
    data: list[ProviderOut]
