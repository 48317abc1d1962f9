"""core.today adapter: FLUX.2 [dev] through core.today's Replicate proxy."""

from __future__ import annotations

import httpx

from app.config import ProviderSettings
from app.providers.coretoday.client import CoreTodayProvider

__all__ = ["CoreTodayProvider", "create"]


def create(name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> CoreTodayProvider:
    return CoreTodayProvider(name, settings, http)
