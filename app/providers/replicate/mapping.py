"""Pure mapping between our normalised request/state and Replicate's prediction API.

Wire facts: `shared/spec/providers.md`, section "Replicate". core.today proxies Replicate and takes
the same ``input`` object, so its adapter reuses ``build_input`` and ``classify_failure``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Required, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

from app.providers.answers import all_complaints
from app.providers.base import (
    ErrorCode,
    NotAccepted,
    ProtocolViolation,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
)

DEFAULT_BASE_URL = "https://api.replicate.com"
# The published version of black-forest-labs/flux-2-dev (providers.md).
FLUX_2_DEV_VERSION = "7bba46bdde863cfd7aaee87649a5aa49f39f368495dbea500998d1fcbb262050"
WEBHOOK_EVENTS = ("start", "completed")

STATUSES: dict[str, UpstreamStatus] = {
    "starting": UpstreamStatus.QUEUED,
    "processing": UpstreamStatus.RUNNING,
    "succeeded": UpstreamStatus.SUCCEEDED,
    "failed": UpstreamStatus.FAILED,
    "canceled": UpstreamStatus.CANCELED,
}

_VERSION_ID = re.compile(r"[0-9a-f]{64}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SEED_IN_LOGS = re.compile(r"using seed:?\s*(\d+)", re.IGNORECASE)
# Replicate reports NSFW as a failed prediction: flux's own checker says "NSFW content", the
# platform filter says "flagged as sensitive (E005)".
_MODERATED = re.compile(r"nsfw|sensitive|safety checker|moderat", re.IGNORECASE)
_BAD_INPUT = re.compile(
    r"invalid input|failed validation|(cannot|could not|failed to|unable to) "
    r"(download|load|open|read|identify|decode)[^.]*image",
    re.IGNORECASE,
)
_CONTENT_TYPES = {".webp": "image/webp", ".png": "image/png", ".jpg": "image/jpeg"}


class ReplicateInput(TypedDict, total=False):
    """The model's ``input`` object (flux-2-dev schema)."""

    prompt: Required[str]
    input_images: list[str]
    aspect_ratio: str
    width: int
    height: int
    seed: int
    go_fast: bool
    output_format: Literal["webp", "jpg", "png"]
    output_quality: int
    disable_safety_checker: bool


class CreateBody(TypedDict, total=False):
    input: Required[ReplicateInput]
    version: str
    webhook: str
    webhook_events_filter: list[str]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a create goes: the model route, or ``/v1/predictions`` with a pinned version."""

    path: str
    version: str | None = None


class Metrics(BaseModel):
    model_config = ConfigDict(extra="ignore")

    predict_time: float | None = None
    total_time: float | None = None


class Prediction(BaseModel):
    """A prediction object as the API returns it (and as webhooks carry it)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: str
    model: str | None = None
    version: str | None = None
    input: dict[str, object] | None = None
    # One URL string for flux-2-dev; a list is accepted defensively (most other models).
    output: str | list[str] | None = None
    logs: str | None = None
    error: str | None = None
    metrics: Metrics | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    urls: dict[str, str] | None = None
    data_removed: bool = False


def resolve_target(model: str, override: str | None = None) -> Target:
    """Pick the create route: a version id (``<hex>`` or ``owner/name:<hex>``) pins a version."""
    ref = override or model
    name, _, version = ref.partition(":")
    if _VERSION_ID.fullmatch(name):
        return Target("/v1/predictions", name)
    if version:
        if not _VERSION_ID.fullmatch(version):
            raise NotAccepted(f"replicate: {ref!r} does not name a version id")
        return Target("/v1/predictions", version)
    if not _MODEL_NAME.fullmatch(name):
        raise NotAccepted(f"replicate: model {ref!r} is not owner/name or a version id")
    return Target(f"/v1/models/{name}/predictions")


def build_input(request: UpstreamRequest) -> ReplicateInput:
    """Our request as the flux-2-dev input object (also core.today's)."""
    body: ReplicateInput = {
        "prompt": request.prompt,
        "aspect_ratio": request.aspect_ratio,
        "go_fast": request.go_fast,
        "output_format": request.output_format,
        "output_quality": request.output_quality,
        "disable_safety_checker": request.disable_safety_checker,
    }
    if request.aspect_ratio == "custom":  # the model ignores width/height for any other ratio
        body["width"] = request.width
        body["height"] = request.height
    if request.input_images:
        body["input_images"] = list(request.input_images)
    if request.seed is not None:
        body["seed"] = request.seed
    # No num_outputs or loras: the model has neither, and capabilities() says so.
    return body


def build_create_body(request: UpstreamRequest, target: Target) -> CreateBody:
    body: CreateBody = {"input": build_input(request)}
    if target.version is not None:
        body["version"] = target.version
    if request.webhook_url:
        body["webhook"] = request.webhook_url
        body["webhook_events_filter"] = list(WEBHOOK_EVENTS)
    return body


def parse_prediction(raw: object, what: str) -> Prediction:
    try:
        return Prediction.model_validate(raw)
    except ValidationError as exc:
        reason = all_complaints(exc)[:300]
        raise ProtocolViolation(f"{what}: not a prediction ({reason})") from exc


def classify_failure(message: str | None) -> ErrorCode:
    """The error code of a failed prediction, from the only thing Replicate gives: its text."""
    if message and _MODERATED.search(message):
        return ErrorCode.MODERATED
    if message and _BAD_INPUT.search(message):
        return ErrorCode.INVALID_INPUT
    return ErrorCode.UPSTREAM_ERROR


def to_outputs(output: str | list[str] | None) -> tuple[UpstreamOutput, ...]:
    urls = [output] if isinstance(output, str) else list(output or [])
    return tuple(UpstreamOutput(url=url, content_type=guess_content_type(url)) for url in urls)


def guess_content_type(url: str) -> str | None:
    path = url.split("?", 1)[0].lower()
    for suffix, content_type in _CONTENT_TYPES.items():
        if path.endswith(suffix):
            return content_type
    return None


def to_state(prediction: Prediction) -> UpstreamState:
    """A prediction in our vocabulary; an undocumented status is a protocol violation."""
    status = STATUSES.get(prediction.status)
    if status is None:
        raise ProtocolViolation(f"replicate: undocumented status {prediction.status!r}")
    seed = _seed_of(prediction)
    if status is UpstreamStatus.FAILED:
        message = prediction.error or "replicate reported a failure without an error message"
        return UpstreamState(
            status,
            prediction.status,
            seed=seed,
            error_code=classify_failure(message),
            error_message=message,
        )
    if status is not UpstreamStatus.SUCCEEDED:
        return UpstreamState(status, prediction.status, seed=seed)
    outputs = to_outputs(prediction.output)
    if not outputs and prediction.data_removed:
        # Replicate deletes API outputs after an hour; the job ran (and was paid) but is lost.
        return UpstreamState(
            UpstreamStatus.FAILED,
            prediction.status,
            seed=seed,
            error_code=ErrorCode.OUTPUT_FETCH_FAILED,
            error_message="replicate removed the output before it was fetched (data_removed)",
        )
    if not outputs:
        raise ProtocolViolation("replicate: succeeded prediction without an output")
    return UpstreamState(status, prediction.status, outputs=outputs, seed=seed)


def _seed_of(prediction: Prediction) -> int | None:
    match = _SEED_IN_LOGS.search(prediction.logs or "")
    if match:
        return int(match.group(1))
    seed = (prediction.input or {}).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None
