"""fal.ai queue API adapter (FLUX.2 [dev] text-to-image, edit and lora endpoints)."""

from app.providers.fal.client import FalProvider, create

__all__ = ["FalProvider", "create"]
