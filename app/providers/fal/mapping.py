"""Pure mapping between our normalised request/states and fal.ai's queue API (FLUX.2 [dev]).

fal serves three endpoints of one app: ``<model>`` (text-to-image), ``<model>/edit`` (adds
``image_urls``) and ``<model>/lora`` (adds ``loras``). Status, result and cancel URLs live under the
app only (``owner/alias/requests/{id}``), never under the endpoint's sub-path.

Decisions where fal's contract is silent:
- ``has_nsfw_concepts`` true for any image, with the safety checker on, fails the whole job as
  ``moderated``: fal returns a black image in that slot, which is not a result worth delivering.
- A cancelled request surfaces as ``COMPLETED`` with an error (the official client knows only three
  statuses); an ``error_type``/``error`` mentioning cancellation maps to ``canceled``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError

from app.providers.answers import first_complaint
from app.providers.base import (
    Capabilities,
    ErrorCode,
    NotAccepted,
    OutcomeUnknown,
    ProtocolViolation,
    Submitted,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
    WebhookRefused,
    WebhookUpdate,
)
from app.providers.fal.wire import (
    FalCancelAnswer,
    FalInput,
    FalResult,
    FalStatusBody,
    FalSubmitAnswer,
    FalWebhookBody,
)

CAPABILITIES = Capabilities(
    max_input_images=4,
    max_loras=3,
    min_side=512,
    max_side=2048,
    formats=frozenset({"webp", "jpg", "png"}),
    max_outputs=4,
    cancel=True,
    webhooks=True,
)

# fal's request error types (infrastructure) and model error types (input), as data.
_TIMEOUT_TYPES = frozenset({"request_timeout", "startup_timeout", "generation_timeout"})
_MODERATION_TYPES = frozenset({"content_policy_violation"})
_CANCEL_TYPES = frozenset({"request_cancelled", "request_canceled", "cancelled", "canceled"})
_INPUT_TYPES = frozenset(
    {
        "image_too_small",
        "image_too_large",
        "image_load_error",
        "file_download_error",
        "face_detection_error",
        "file_too_large",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
        "sequence_too_short",
        "sequence_too_long",
        "one_of",
        "feature_not_supported",
        "unsupported_image_format",
    }
)
_MODERATION_WORDS = ("nsfw", "content policy", "content_policy")


# --- request mapping ------------------------------------------------------------------------


def endpoint_id(request: UpstreamRequest, model: str) -> str:
    """The submit endpoint for this request: the base model, ``/edit`` or ``/lora``."""
    if request.input_images and request.loras:
        # fal's FLUX.2 [dev] has no endpoint taking both; nothing was sent, so try elsewhere.
        raise NotAccepted("fal: no FLUX.2 endpoint takes both input images and loras")
    if request.input_images:
        return f"{model}/edit"
    if request.loras:
        return f"{model}/lora"
    return model


def app_id(model: str) -> str:
    """``owner/alias``: where status, result and cancel URLs live (the sub-path is dropped)."""
    return "/".join(model.split("/")[:2])


def build_input(request: UpstreamRequest) -> FalInput:
    body: FalInput = {
        "prompt": request.prompt,
        "image_size": {"width": request.width, "height": request.height},
        "num_images": request.num_outputs,
        "acceleration": "regular" if request.go_fast else "none",
        "enable_safety_checker": not request.disable_safety_checker,
        "output_format": "jpeg" if request.output_format == "jpg" else request.output_format,
        "sync_mode": False,  # data URIs in the result would bloat every poll
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.input_images:
        body["image_urls"] = list(request.input_images)
    if request.loras:
        body["loras"] = [{"path": lora.path, "scale": lora.scale} for lora in request.loras]
    return body


# --- response mapping -----------------------------------------------------------------------


def parse_submit(raw: object) -> FalSubmitAnswer:
    try:
        return FalSubmitAnswer.model_validate(raw)
    except ValidationError as exc:
        # The request may well have been queued (and billed); we just cannot follow it.
        why = first_complaint(exc)
        raise OutcomeUnknown(f"fal submit: answer without a request id ({why})") from exc


def submitted(answer: FalSubmitAnswer, base_url: str) -> Submitted:
    """Keep the URLs fal returned, but none on another origin: our key goes only to our queue."""
    returned = {
        "status_url": answer.status_url,
        "response_url": answer.response_url,
        "cancel_url": answer.cancel_url,
    }
    handle = {key: url for key, url in returned.items() if url and same_origin(url, base_url)}
    return Submitted(upstream_id=answer.request_id, handle=handle)


def same_origin(url: str, base_url: str) -> bool:
    ours, theirs = urlsplit(base_url), urlsplit(url)
    return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)


def parse_status(raw: object) -> FalStatusBody:
    try:
        return FalStatusBody.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolViolation(f"fal status: unexpected body ({first_complaint(exc)})") from exc


def parse_result(raw: object) -> FalResult:
    try:
        return FalResult.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolViolation(f"fal result: unexpected body ({first_complaint(exc)})") from exc


def parse_cancel(raw: object) -> FalCancelAnswer:
    try:
        return FalCancelAnswer.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolViolation(f"fal cancel: unexpected body ({first_complaint(exc)})") from exc


def state_from_status(body: FalStatusBody) -> UpstreamState | None:
    """Our state for a status answer; ``None`` when it completed cleanly and the result decides."""
    if body.status == "IN_QUEUE":
        return UpstreamState(UpstreamStatus.QUEUED, body.status)
    if body.status == "IN_PROGRESS":
        return UpstreamState(UpstreamStatus.RUNNING, body.status)
    if body.status != "COMPLETED":
        raise ProtocolViolation(f"fal status: undocumented status {body.status!r}")
    if body.error is None and body.error_type is None:
        return None
    message = " / ".join(part for part in (body.error_type, body.error) if part)
    if _is_cancellation(body.error, body.error_type):
        return UpstreamState(UpstreamStatus.CANCELED, body.status, error_message=message)
    return UpstreamState(
        UpstreamStatus.FAILED,
        body.status,
        error_code=failure_code(body.error, body.error_type),
        error_message=message,
    )


def failure_code(error: str | None, error_type: str | None) -> ErrorCode:
    kind = (error_type or "").lower()
    text = (error or "").lower()
    if kind in _MODERATION_TYPES or any(word in text for word in _MODERATION_WORDS):
        return ErrorCode.MODERATED
    if kind in _INPUT_TYPES:
        return ErrorCode.INVALID_INPUT
    if kind in _TIMEOUT_TYPES:
        return ErrorCode.UPSTREAM_TIMEOUT
    return ErrorCode.UPSTREAM_ERROR


def state_from_result(result: FalResult, *, safety_checker_on: bool) -> UpstreamState:
    if not result.images:
        raise ProtocolViolation("fal result: COMPLETED without images")
    if safety_checker_on and any(result.has_nsfw_concepts or ()):
        return UpstreamState(
            UpstreamStatus.FAILED,
            "COMPLETED",
            seed=result.seed,
            error_code=ErrorCode.MODERATED,
            error_message="fal safety checker flagged the output (has_nsfw_concepts)",
        )
    outputs = tuple(
        UpstreamOutput(url=i.url, content_type=i.content_type, width=i.width, height=i.height)
        for i in result.images
    )
    return UpstreamState(UpstreamStatus.SUCCEEDED, "COMPLETED", outputs=outputs, seed=result.seed)


def webhook_update(body: bytes) -> WebhookUpdate:
    """A fal webhook as a hint: its ED25519 (JWKS) signature is not verified, so never trusted."""
    try:
        parsed = FalWebhookBody.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise WebhookRefused(f"fal webhook: not a fal webhook body ({type(exc).__name__})") from exc
    if not parsed.request_id:
        raise WebhookRefused("fal webhook: empty request_id")
    # fal retries a delivery with the same body: the pair identifies the event for deduplication.
    event_id = f"{parsed.request_id}:{parsed.status}"
    return WebhookUpdate(upstream_id=parsed.request_id, verified=False, event_id=event_id)


def _is_cancellation(error: str | None, error_type: str | None) -> bool:
    return (error_type or "").lower() in _CANCEL_TYPES or "cancel" in (error or "").lower()
