"""Novita's FLUX.2 [dev] wire shapes and the pure mapping to and from our vocabulary.

Submit ``POST /v3/async/flux-2-dev`` with `NovitaSubmitBody`; read ``GET /v3/async/task-result``
into `NovitaTaskResult`; an inbound webhook wraps the same task result and is unsigned, so it is
only ever a hint (`parse_webhook_body`). No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, NotRequired, TypedDict

import orjson
from pydantic import BaseModel, Field, ValidationError, field_validator

from app.providers.answers import first_complaint
from app.providers.base import (
    ErrorCode,
    NotAccepted,
    ProtocolViolation,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
    WebhookRefused,
    WebhookUpdate,
)

RANDOM_SEED = -1  # Novita's "pick one for me"

# Novita takes no output-format parameter for this model; the generic V3 `response_image_type`
# is documented as defaulting to png and is not listed for flux-2-dev, so we promise only png
# (the router sends other formats elsewhere) and never ask for anything else.
OUTPUT_FORMATS: frozenset[str] = frozenset({"png"})


class LoraFields(NamedTuple):
    path: str
    scale: str


# The item shape of `loras` is undocumented for flux-2-dev; `{path, scale}` mirrors Novita's other
# FLUX APIs. Change the names here (and only here) once the real shape is known.
LORA_FIELDS = LoraFields(path="path", scale="scale")

STATUSES: Mapping[str, UpstreamStatus] = {
    "TASK_STATUS_QUEUED": UpstreamStatus.QUEUED,
    "TASK_STATUS_PROCESSING": UpstreamStatus.RUNNING,
    "TASK_STATUS_SUCCEED": UpstreamStatus.SUCCEEDED,
    "TASK_STATUS_FAILED": UpstreamStatus.FAILED,
}

# `task.reason` is free text. Checked in order; the first group with a matching marker wins.
# Anything else is the upstream's own failure (the router may fail over on it).
REASON_CODES: tuple[tuple[ErrorCode, tuple[str, ...]], ...] = (
    (ErrorCode.MODERATED, ("nsfw", "moderat", "sensitive", "safety", "content policy")),
    (
        ErrorCode.INVALID_INPUT,
        ("invalid param", "invalid input", "invalid image", "failed to download", "out of range"),
    ),
)

CONTENT_TYPES: Mapping[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
}

WEBHOOK_EVENT = "ASYNC_TASK_RESULT"


class NovitaWebhookTarget(TypedDict):
    url: str


class NovitaExtra(TypedDict):
    webhook: NovitaWebhookTarget


class NovitaSubmitBody(TypedDict):
    prompt: str
    size: str  # "W*H", each side 256..1536
    seed: int  # -1..2147483647
    images: NotRequired[list[str]]  # 1..3 when present
    loras: NotRequired[list[dict[str, str | float]]]  # 0..3
    extra: NotRequired[NovitaExtra]


def to_submit_body(request: UpstreamRequest) -> NovitaSubmitBody:
    """Our request as Novita's submit body. Fields Novita lacks (format, quality, go_fast,
    safety checker, outputs count) are covered by `capabilities`, not sent."""
    if request.output_format not in OUTPUT_FORMATS:
        raise NotAccepted(f"novita: cannot produce {request.output_format} (only png)")
    body: NovitaSubmitBody = {
        "prompt": request.prompt,
        "size": f"{request.width}*{request.height}",
        "seed": RANDOM_SEED if request.seed is None else request.seed,
    }
    if request.input_images:
        body["images"] = list(request.input_images)
    if request.loras:
        body["loras"] = [
            {LORA_FIELDS.path: lora.path, LORA_FIELDS.scale: lora.scale} for lora in request.loras
        ]
    if request.webhook_url:
        body["extra"] = {"webhook": {"url": request.webhook_url}}
    return body


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _readable_or_none(parse: Callable[[str], object]) -> Callable[[Any], Any]:
    """Seed and URL lifetime are informational: an unreadable one is dropped, not fatal."""

    def check(value: Any) -> Any:
        if isinstance(value, str):
            try:
                parse(value.strip())
            except ValueError:
                return None
        return value

    return check


class NovitaSubmitAnswer(BaseModel):
    task_id: str = Field(min_length=1)


class NovitaTask(BaseModel):
    task_id: str = Field(min_length=1)
    status: str
    task_type: str | None = None
    reason: str | None = None
    eta: float | None = None
    progress_percent: float | None = None

    blank_to_none = field_validator("eta", "progress_percent", mode="before")(_blank_to_none)


class NovitaNsfwDetection(BaseModel):
    # Shape from Novita's SDK; what `valid` means is undocumented, so it never changes a state.
    valid: bool | None = None
    confidence: float | None = None


class NovitaImage(BaseModel):
    image_url: str = Field(min_length=1)
    image_type: str | None = None
    image_url_ttl: float | None = None  # seconds; Novita sends a number or a numeric string
    nsfw_detection_result: NovitaNsfwDetection | None = None

    drop_unreadable = field_validator("image_url_ttl", mode="before")(_readable_or_none(float))


class NovitaResultExtra(BaseModel):
    seed: int | None = None  # documented as a string ("158881667"); pydantic's lax mode parses it

    drop_unreadable = field_validator("seed", mode="before")(_readable_or_none(int))


class NovitaTaskResult(BaseModel):
    task: NovitaTask
    images: list[NovitaImage] | None = None
    extra: NovitaResultExtra | None = None


class NovitaWebhook(BaseModel):
    event_type: str
    payload: NovitaTaskResult


def parse_submit_answer(data: Any) -> str:
    """The task id from a submit answer; `ValidationError` when there is none."""
    return NovitaSubmitAnswer.model_validate(data).task_id


def parse_task_result(data: Any) -> NovitaTaskResult:
    try:
        return NovitaTaskResult.model_validate(data)
    except ValidationError as exc:
        why = first_complaint(exc)
        raise ProtocolViolation(f"novita: task result does not parse: {why}") from exc


def to_state(result: NovitaTaskResult) -> UpstreamState:
    """A task result in our vocabulary; an undocumented status is a protocol violation."""
    raw = result.task.status
    status = STATUSES.get(raw)
    if status is None:
        raise ProtocolViolation(f"novita: undocumented task status {raw!r}")
    seed = result.extra.seed if result.extra else None
    if status is UpstreamStatus.FAILED:
        reason = (result.task.reason or "").strip() or "Novita reported the task failed"
        return UpstreamState(
            status, raw, seed=seed, error_code=error_code_for(reason), error_message=reason
        )
    if status is not UpstreamStatus.SUCCEEDED:
        return UpstreamState(status, raw, seed=seed)
    if not result.images:
        raise ProtocolViolation("novita: task succeeded without images")
    outputs = tuple(
        UpstreamOutput(url=image.image_url, content_type=CONTENT_TYPES.get(image.image_type or ""))
        for image in result.images
    )
    return UpstreamState(status, raw, outputs=outputs, seed=seed)


def error_code_for(reason: str) -> ErrorCode:
    lowered = reason.lower()
    for code, markers in REASON_CODES:
        if any(marker in lowered for marker in markers):
            return code
    return ErrorCode.UPSTREAM_ERROR


def parse_webhook_body(body: bytes) -> WebhookUpdate:
    """Novita's webhooks are unsigned: a well-formed one is a hint to poll once, never a result."""
    try:
        hook = NovitaWebhook.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise WebhookRefused(f"novita: webhook body does not parse ({type(exc).__name__})") from exc
    if hook.event_type != WEBHOOK_EVENT:
        raise WebhookRefused(f"novita: unexpected webhook event {hook.event_type[:60]!r}")
    return WebhookUpdate(upstream_id=hook.payload.task.task_id, verified=False, state=None)
