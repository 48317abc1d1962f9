"""Request bodies and answer parsing for OpenAI-style ``POST /images/generations`` upstreams.

Two dialects share the endpoint: Together AI (``width``/``height``, ``n``, ``seed``,
``response_format``, ``output_format``, ``reference_images``, ``loras``, ``disable_safety_checker``)
and DeepInfra (``size: "WxH"`` and ``n`` only, base64 JPEG answers). Both answer
``{"data": [{"url" | "b64_json", ...}]}`` synchronously, so an answer maps straight to a finished
`UpstreamState`. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field, ValidationError, model_validator

from app.providers.answers import first_complaint
from app.providers.base import (
    ErrorCode,
    ProtocolViolation,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
)

# A synchronous answer has no status field; this is the `raw_status` of a 200 with images.
RAW_SUCCEEDED = "ok"
RAW_MODERATED = "refused: content policy"

# URLs keep answers small (base64 of four large PNGs is tens of MB held in memory and in the
# attempt's state); Together's CDN then needs a non-empty User-Agent on the output fetch.
TOGETHER_RESPONSE_FORMAT: Literal["url"] = "url"
TOGETHER_OUTPUT_FORMATS: Mapping[str, Literal["jpeg", "png"]] = {"jpg": "jpeg", "png": "png"}
CONTENT_TYPES: Mapping[str, str] = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}

# Leading bytes of each image type an upstream may hand back as base64.
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"RIFF", "image/webp"),  # followed by "WEBP" at offset 8, checked below
)

# An error answer (HTTP 400/422) that names one of these was the upstream's safety checker. Words,
# not field names: a complaint about the `disable_safety_checker` field is not a moderation.
MODERATION_MARKERS: tuple[str, ...] = (
    "nsfw",
    "safety checker",
    "moderat",
    "content policy",
    "content_policy",
)


class TogetherLora(TypedDict):
    path: str
    scale: float


class TogetherBody(TypedDict):
    model: str
    prompt: str
    width: int
    height: int
    n: int
    response_format: Literal["url", "base64"]
    output_format: Literal["jpeg", "png"]
    disable_safety_checker: bool
    seed: NotRequired[int]
    reference_images: NotRequired[list[str]]  # FLUX.2 [dev] takes these, never `image_url`
    loras: NotRequired[list[TogetherLora]]


class DeepInfraBody(TypedDict):
    model: str
    prompt: str
    size: str  # "WxH"
    n: int


RequestBody = TogetherBody | DeepInfraBody


def together_body(request: UpstreamRequest, model: str) -> TogetherBody:
    """Together's body. `go_fast` and `output_quality` have no Together equivalent."""
    body: TogetherBody = {
        "model": model,
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "n": request.num_outputs,
        "response_format": TOGETHER_RESPONSE_FORMAT,
        "output_format": TOGETHER_OUTPUT_FORMATS[request.output_format],
        "disable_safety_checker": request.disable_safety_checker,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.input_images:
        body["reference_images"] = list(request.input_images)
    if request.loras:
        body["loras"] = [{"path": lora.path, "scale": lora.scale} for lora in request.loras]
    return body


def deepinfra_body(request: UpstreamRequest, model: str) -> DeepInfraBody:
    """DeepInfra's documented body has no seed, format, safety or reference-image fields."""
    return {
        "model": model,
        "prompt": request.prompt,
        "size": f"{request.width}x{request.height}",
        "n": request.num_outputs,
    }


class ImageItem(BaseModel):
    index: int | None = None
    url: str | None = Field(default=None, min_length=1)
    b64_json: str | None = Field(default=None, min_length=1)
    type: str | None = None

    @model_validator(mode="after")
    def _one_payload(self) -> ImageItem:
        if (self.url is None) == (self.b64_json is None):
            raise ValueError("an image needs exactly one of url and b64_json")
        return self


class ImagesAnswer(BaseModel):
    id: str | None = None  # Together only
    model: str | None = None
    created: int | None = None  # DeepInfra only
    data: list[ImageItem] = Field(min_length=1)


def parse_answer(data: Any) -> ImagesAnswer:
    try:
        return ImagesAnswer.model_validate(data)
    except ValidationError as exc:
        raise ProtocolViolation(f"images answer does not parse: {first_complaint(exc)}") from exc


def to_state(answer: ImagesAnswer, request: UpstreamRequest, seed: int | None) -> UpstreamState:
    """The finished job. ``seed`` is the one we sent (these upstreams do not echo it)."""
    items = sorted(answer.data, key=lambda item: item.index or 0)
    outputs = tuple(_output(item, request) for item in items)
    return UpstreamState(UpstreamStatus.SUCCEEDED, RAW_SUCCEEDED, outputs=outputs, seed=seed)


def _output(item: ImageItem, request: UpstreamRequest) -> UpstreamOutput:
    if item.url is not None:
        # A URL output is in the format we asked for (Together honours `output_format`).
        content_type = CONTENT_TYPES[request.output_format]
        return UpstreamOutput(item.url, content_type, request.width, request.height)
    encoded = "".join((item.b64_json or "").split())
    content_type = sniff_base64(encoded)
    return UpstreamOutput(
        f"data:{content_type};base64,{encoded}", content_type, request.width, request.height
    )


def sniff_base64(encoded: str) -> str:
    """The image type of a base64 payload; `ProtocolViolation` for bad base64 or a non-image."""
    try:
        head = base64.b64decode(encoded, validate=True)[:12]
    except (binascii.Error, ValueError) as exc:
        raise ProtocolViolation("images answer: b64_json is not valid base64") from exc
    for magic, content_type in MAGIC:
        if head.startswith(magic) and (magic != b"RIFF" or head[8:12] == b"WEBP"):
            return content_type
    raise ProtocolViolation(f"images answer: b64_json is not a png, jpeg or webp ({head[:4]!r})")


def refusal_code(message: str) -> ErrorCode | None:
    """`MODERATED` when an upstream's refusal names its safety checker, else None."""
    lowered = message.lower()
    return ErrorCode.MODERATED if any(m in lowered for m in MODERATION_MARKERS) else None


def moderated_state(message: str) -> UpstreamState:
    return UpstreamState(
        UpstreamStatus.FAILED,
        RAW_MODERATED,
        error_code=ErrorCode.MODERATED,
        error_message=message[:500],
    )
