"""Novita AI (async V3 API) adapter for FLUX.2 [dev]: `create` is the registry's factory."""

from app.providers.novita.client import NovitaProvider, create

__all__ = ["NovitaProvider", "create"]
