"""Replicate adapter: FLUX.2 [dev] as ``black-forest-labs/flux-2-dev`` predictions."""

from __future__ import annotations

import httpx

from app.config import ProviderSettings
from app.providers.replicate.client import ReplicateProvider

__all__ = ["ReplicateProvider", "create"]


def create(name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> ReplicateProvider:
    return ReplicateProvider(name, settings, http)
