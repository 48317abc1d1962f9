"""Request and response shapes of ``/v1/images`` (the seed's body: ``model`` + ``input``).

Every input rule of `api.md` lives here, so a violation is a 422 whose ``loc`` names the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from PIL import Image, UnidentifiedImageError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)
from pydantic.config import JsonDict

AspectRatio = Literal[
    "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3", "match_input_image", "custom"
]
WebhookEvent = Literal["processing", "completed", "failed", "cancelled"]
Strategy = Literal["cheapest", "fastest", "ordered"]

# Query strings: printable text only (a NUL would reach the database as an error, not a miss).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_text(value: object) -> object:
    if isinstance(value, str) and _RFC3339.match(value):
        return value
    raise ValueError("must be an RFC 3339 date-time with a timezone, e.g. 2026-01-01T00:00:00Z")


# A date-time in a query: RFC 3339 text with an offset (no Unix times, no naive times).
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]

MAX_PROMPT = 10_000
MAX_DATA_URL_BYTES = 10 * 1024 * 1024
MAX_METADATA_BYTES = 4096
MAX_SIDE_INPUT = 65_535
_DATA_URL = re.compile(r"^data:image/(jpeg|jpg|png|gif|webp);base64,(.*)$", re.DOTALL)

# Documentation only (the validators below enforce these with clearer messages): they make the
# OpenAPI document as strict as the app, so generated clients and fuzzers know the rules.
_IMAGE_URL_DOC: JsonDict = {
    "pattern": r"^(https?://[^\s/?#]+|data:image/(jpeg|jpg|png|gif|webp);base64,)",
    "description": "an http(s) URL, or a data: URL of jpeg, png, gif or webp (at most 10 MB)",
}
_HTTP_URL_DOC: JsonDict = {"pattern": r"^https?://[^\s/]+"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=20_000_000)


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text or JSONB: refuse it here rather than fail there.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


def _json_problem(value: Any) -> str | None:
    """Why parsed JSON ``value`` cannot be stored as JSON on both engines, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must not hold NaN or Infinity"
    if isinstance(value, str) and "\x00" in value:
        return "must not contain NUL (U+0000) characters"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _json_problem(key) or _json_problem(item)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _json_problem(item)
            if problem:
                return problem
    return None


def data_url_bytes(url: str) -> bytes:
    """Decode a ``data:`` image URL, enforcing the 10 MB cap; raises ValueError with a reason."""
    match = _DATA_URL.match(url)
    if match is None:
        raise ValueError("a data URL must be data:image/(jpeg|png|gif|webp);base64,...")
    payload = match.group(2)
    if len(payload) * 3 // 4 > MAX_DATA_URL_BYTES + 3:
        raise ValueError("a data URL may hold at most 10 MB")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the data URL is not valid base64") from exc
    if len(data) > MAX_DATA_URL_BYTES:
        raise ValueError("a data URL may hold at most 10 MB")
    return data


def image_size_of(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("the data URL does not hold a readable image") from exc


class Lora(_Strict):
    path: Text = Field(min_length=1, max_length=2048, json_schema_extra=_HTTP_URL_DOC)
    scale: float = Field(default=1.0, ge=-4, le=4)

    @field_validator("path")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL")
        return value


class ImageInput(_Strict):
    """The client's input, field by field; ``jobs.normalise`` applies the cross-field rules."""

    prompt: Text = Field(json_schema_extra={"pattern": r"\S", "maxLength": MAX_PROMPT})
    input_images: list[Annotated[Text, Field(json_schema_extra=_IMAGE_URL_DOC)]] = Field(
        default_factory=list, max_length=4
    )
    aspect_ratio: AspectRatio | None = None
    # Sanity bounds only (any real side fits): `normalise` applies the 256..2048 rule to custom
    # sizes; without a bound a 70-bit integer reached the request hash and answered 500.
    width: int | None = Field(default=None, ge=0, le=MAX_SIDE_INPUT)
    height: int | None = Field(default=None, ge=0, le=MAX_SIDE_INPUT)
    seed: int | None = Field(default=None, ge=-1, le=2_147_483_647)
    output_format: Literal["webp", "jpg", "jpeg", "png"] = "webp"
    output_quality: int = Field(default=80, ge=0, le=100)
    go_fast: bool = True
    disable_safety_checker: bool = False
    num_outputs: int = Field(default=1, ge=1, le=4)
    loras: list[Lora] = Field(default_factory=list, max_length=3)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        if len(value) > MAX_PROMPT:
            raise ValueError(f"must be at most {MAX_PROMPT} characters")
        return value


class Routing(_Strict):
    strategy: Strategy = "cheapest"
    providers: list[Annotated[Text, Field(max_length=100)]] | None = Field(
        default=None, max_length=20
    )
    exclude: list[Annotated[Text, Field(max_length=100)]] = Field(
        default_factory=list, max_length=20
    )
    max_cost_usd: Decimal | None = Field(default=None, gt=0, max_digits=12, decimal_places=6)
    allow_fallbacks: bool = True


class CreateImageJob(_Strict):
    """``POST /v1/images``: the seed's request body plus imagegate's options."""

    model: Text = Field(min_length=1, max_length=200)
    input: ImageInput
    webhook: (
        Annotated[Text, Field(max_length=2048, json_schema_extra={"pattern": "^https?://"})] | None
    ) = Field(default=None, description="an https URL (http only where the operator allows it)")
    webhook_events: list[WebhookEvent] | None = None
    routing: Routing = Field(default_factory=Routing)
    metadata: dict[str, Any] | None = None
    cache: bool | None = Field(
        default=None,
        description="reuse the images of a completed identical request with an explicit seed "
        "(zero cost, `cached: true`); default: the operator's setting",
    )
    deadline_s: int | None = Field(
        default=None,
        ge=1,
        le=7 * 86_400,
        description="seconds until an unfinished job is cancelled (upstream too) and fails "
        "with deadline_exceeded; default and maximum are the operator's",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            serialised = orjson.dumps(value)
        except TypeError as exc:  # integers beyond 64 bits, nesting deeper than 254 levels
            raise ValueError(f"must be storable JSON ({exc})") from None
        if len(serialised) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes serialised")
        problem = _json_problem(value)
        if problem:
            raise ValueError(problem)
        return value


# --- responses (documentation of the job object; handlers render plain dicts for speed) -------


class ImageOut(BaseModel):
    url: str | None  # null once the file expired (retention)
    content_type: str
    width: int
    height: int
    bytes: int
    expired: bool = False


class ResultOut(BaseModel):
    images: list[ImageOut]
    seed: int | None = None
    expired_at: str | None = None  # when retention deleted the files


class ErrorOut(BaseModel):
    code: str
    message: str
    provider: str | None = None


class CostOut(BaseModel):
    estimated_usd: str | None
    actual_usd: str | None
    currency: Literal["USD"] = "USD"


class AttemptOut(BaseModel):
    provider: str
    upstream_id: str | None
    status: str
    submitted_at: str | None
    finished_at: str | None
    error: ErrorOut | None = None


class JobOut(BaseModel):
    job_id: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    stage: str
    model: str
    provider: str | None
    input: dict[str, Any]
    result: ResultOut | None
    error: ErrorOut | None
    cost: CostOut
    attempts: list[AttemptOut]
    metadata: dict[str, Any] | None
    cached: bool = False  # the result reused an identical earlier job's images
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    urls: dict[str, str]


class JobList(BaseModel):
    data: list[JobOut]
    next_cursor: str | None
