"""Pure mapping for core.today, a Replicate proxy with its own envelope.

Two answer shapes are documented (providers.md, "core.today"): the seed's
``{"job_id", "status": "pending", "result", "error"}`` with statuses ``pending processing
completed failed cancelled``, and core.today's own examples, shaped like Replicate's
``{"id", "status": "succeeded", "output": [...]}``. Both parse into one model here. The
``input`` object is Replicate's, so it is built by the Replicate mapping.
"""

from __future__ import annotations

from typing import Required, Self, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from app.providers.answers import all_complaints
from app.providers.base import (
    ProtocolViolation,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
    WebhookUpdate,
)
from app.providers.replicate.mapping import (
    ReplicateInput,
    build_input,
    classify_failure,
    guess_content_type,
)

DEFAULT_BASE_URL = "https://api.core.today/v1"
WEBHOOK_EVENTS = ("completed", "failed")

STATUSES: dict[str, UpstreamStatus] = {
    "pending": UpstreamStatus.QUEUED,
    # Not in core.today's list, but it passes Replicate's answers through in the Replicate
    # shape, and "starting" is Replicate's queued state: failing a job over it helps nobody.
    "starting": UpstreamStatus.QUEUED,
    "processing": UpstreamStatus.RUNNING,
    "completed": UpstreamStatus.SUCCEEDED,
    "succeeded": UpstreamStatus.SUCCEEDED,
    "failed": UpstreamStatus.FAILED,
    "cancelled": UpstreamStatus.CANCELED,
    "canceled": UpstreamStatus.CANCELED,
}


class CreateBody(TypedDict, total=False):
    model: Required[str]
    input: Required[ReplicateInput]
    webhook: str
    webhook_events: list[str]


class OutputItem(BaseModel):
    """An output given as an object rather than a bare URL (defensive: the shape is unknown)."""

    model_config = ConfigDict(extra="ignore")

    url: str


Output = str | OutputItem | list[str | OutputItem]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str | None = None
    detail: str | None = None
    code: str | None = None


class Job(BaseModel):
    """A prediction in either documented shape; ``job_id``/``id`` and ``result``/``output``."""

    model_config = ConfigDict(extra="ignore")

    job_id: str | None = None
    id: str | None = None
    status: str
    result: Output | None = None
    output: Output | None = None
    error: str | ErrorDetail | None = None

    @model_validator(mode="after")
    def _has_an_id(self) -> Self:
        if not (self.job_id or self.id):
            raise ValueError("neither job_id nor id is set")
        return self

    @property
    def upstream_id(self) -> str:
        return self.job_id or self.id or ""

    @property
    def error_message(self) -> str | None:
        if isinstance(self.error, ErrorDetail):
            return self.error.message or self.error.detail or self.error.code
        return self.error


def build_create_body(request: UpstreamRequest) -> CreateBody:
    body: CreateBody = {"model": request.model, "input": build_input(request)}
    if request.webhook_url:
        body["webhook"] = request.webhook_url
        body["webhook_events"] = list(WEBHOOK_EVENTS)
    return body


def parse_job(raw: object, what: str) -> Job:
    try:
        return Job.model_validate(raw)
    except ValidationError as exc:
        reason = all_complaints(exc)[:300]
        raise ProtocolViolation(f"{what}: not a prediction ({reason})") from exc


def to_outputs(output: Output | None) -> tuple[UpstreamOutput, ...]:
    items = output if isinstance(output, list) else [] if output is None else [output]
    urls = [item if isinstance(item, str) else item.url for item in items]
    for url in urls:
        if not url.startswith(("https://", "http://", "data:")):
            raise ProtocolViolation(f"coretoday: output is not a URL ({url[:60]!r})")
    return tuple(UpstreamOutput(url=url, content_type=guess_content_type(url)) for url in urls)


def to_state(job: Job) -> UpstreamState:
    status = STATUSES.get(job.status)
    if status is None:
        raise ProtocolViolation(f"coretoday: undocumented status {job.status!r}")
    if status is UpstreamStatus.FAILED:
        # core.today relays Replicate's error text, so Replicate's classifier reads it.
        message = job.error_message or "core.today reported a failure without an error message"
        return UpstreamState(
            status,
            job.status,
            error_code=classify_failure(message),
            error_message=message,
        )
    if status is not UpstreamStatus.SUCCEEDED:
        return UpstreamState(status, job.status)
    outputs = to_outputs(job.result if job.result is not None else job.output)
    if not outputs:
        raise ProtocolViolation(f"coretoday: {job.status} prediction without a result")
    return UpstreamState(status, job.status, outputs=outputs)


def webhook_hint(raw: object) -> WebhookUpdate:
    """An unsigned callback only names the job: the gateway confirms it with one poll."""
    job = parse_job(raw, "coretoday webhook")
    return WebhookUpdate(upstream_id=job.upstream_id, verified=False)
