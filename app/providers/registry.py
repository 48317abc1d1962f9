"""Which adapter serves which configured provider, keyed by kind; adapters load only when used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import cast

import httpx

from app.config import ProviderSettings, Settings
from app.providers.base import Provider
from app.providers.throttle import DEFAULT_RPS, Throttled

Factory = Callable[[str, ProviderSettings, httpx.AsyncClient], Provider]

# kind -> "module:function"; each adapter package exposes ``create(name, settings, http)``.
ADAPTERS: Mapping[str, str] = {
    "replicate": "app.providers.replicate:create",
    "fal": "app.providers.fal:create",
    "novita": "app.providers.novita:create",
    "coretoday": "app.providers.coretoday:create",
    "openai_images": "app.providers.openai_images:create",
}


class UnknownProviderKind(Exception):
    pass


def load_factory(kind: str) -> Factory:
    target = ADAPTERS.get(kind)
    if target is None:
        raise UnknownProviderKind(f"unknown provider kind {kind!r}; known: {sorted(ADAPTERS)}")
    module_name, _, attr = target.partition(":")
    return cast(Factory, getattr(importlib.import_module(module_name), attr))


def build_providers(settings: Settings, http: httpx.AsyncClient) -> dict[str, Provider]:
    """Instantiate every enabled provider, the simulator first when it is on."""
    providers: dict[str, Provider] = {}
    if settings.simulator_enabled:
        from app.providers.simulator import SimulatorProvider

        providers["simulator"] = SimulatorProvider(settings.simulator)
    for name, conf in settings.providers.items():
        if not conf.enabled or name == "simulator":
            continue
        kind = conf.kind or name
        provider = load_factory(kind)(name, conf, http)
        rate = conf.requests_per_second or DEFAULT_RPS.get(kind)
        providers[name] = Throttled(provider, rate) if rate else provider
    return providers
