"""fal.ai's wire shapes for FLUX.2 [dev]: the submit body we send and the answers we parse.

Parsed models ignore fields they do not name (fal adds fields over time); ``mapping`` turns them
into our vocabulary.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict

# --- what we send ---------------------------------------------------------------------------


class FalImageSize(TypedDict):
    width: int
    height: int


class FalLora(TypedDict):
    path: str
    scale: float


class FalInput(TypedDict):
    """The submit body. Steps and guidance are left to fal's defaults (28, 2.5)."""

    prompt: str
    image_size: FalImageSize
    num_images: int
    acceleration: Literal["none", "regular"]
    enable_safety_checker: bool
    output_format: Literal["jpeg", "png", "webp"]
    sync_mode: bool
    seed: NotRequired[int]
    image_urls: NotRequired[list[str]]
    loras: NotRequired[list[FalLora]]


# --- what fal answers -----------------------------------------------------------------------


class _FalModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FalSubmitAnswer(_FalModel):
    request_id: str
    response_url: str | None = None
    status_url: str | None = None
    cancel_url: str | None = None
    queue_position: int | None = None


class FalStatusBody(_FalModel):
    status: str
    queue_position: int | None = None
    response_url: str | None = None
    logs: list[object] | None = None
    metrics: dict[str, float | None] | None = None
    error: str | None = None
    error_type: str | None = None


class FalImage(_FalModel):
    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    width: int | None = None
    height: int | None = None


class FalResult(_FalModel):
    images: list[FalImage]
    seed: int | None = None
    prompt: str | None = None
    has_nsfw_concepts: list[bool] | None = None
    timings: dict[str, float | None] | None = None


class FalCancelAnswer(_FalModel):
    status: Literal["OK", "CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"]


class FalWebhookBody(_FalModel):
    request_id: str
    gateway_request_id: str | None = None
    status: Literal["OK", "ERROR"]
    error: str | None = None
