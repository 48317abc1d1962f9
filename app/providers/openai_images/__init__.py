"""Synchronous OpenAI-style image upstreams (Together AI, DeepInfra): `create` is the factory."""

from app.providers.openai_images.client import OpenAIImagesProvider, create
from app.providers.openai_images.dialects import DIALECTS, Dialect

__all__ = ["DIALECTS", "Dialect", "OpenAIImagesProvider", "create"]
