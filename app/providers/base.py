"""The provider protocol every upstream adapter implements, and the failure classification.

An adapter maps our normalised request to one upstream's wire format and back. The protocol is
deliberately narrow (capabilities, submit, poll); optional powers are separate protocols checked
with ``isinstance``: ``Cancellable``, ``WebhookReceiver`` and ``OutputSource``.

Exceptions raised by adapters (the worker decides what each means for the job):

    ProviderError
     ├── NotAccepted        the upstream did not take the job: connect refused, 429, 5xx before
     │                      acceptance, auth or credit problems. Safe to try the next candidate.
     ├── OutcomeUnknown     the request was sent and we cannot tell whether it was accepted
     │                      (timeout or reset after sending). Reconcile; never resubmit.
     ├── Rejected           the upstream says this input is invalid. The job fails `invalid_input`.
     ├── TransientError     a poll, cancel or output fetch failed for a passing reason; try later
     │                      (after ``retry_after`` when the upstream said so).
     └── ProtocolViolation  the upstream answered something we cannot understand (malformed body,
                            unknown status): the attempt fails `upstream_error` with the reason.

A job that the upstream ran and that failed is not an exception: ``poll`` returns an
``UpstreamState`` with status ``failed`` and an ``ErrorCode``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

OutputFormat = Literal["webp", "jpg", "png"]


class ErrorCode(StrEnum):
    """Stable, public error codes of a failed job (`api.md`)."""

    MODERATED = "moderated"
    INVALID_INPUT = "invalid_input"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    SUBMIT_OUTCOME_UNKNOWN = "submit_outcome_unknown"
    NO_PROVIDER_AVAILABLE = "no_provider_available"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    OUTPUT_FETCH_FAILED = "output_fetch_failed"


class ProviderError(Exception):
    """Base of every classified upstream failure."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status  # the upstream's HTTP status, when it answered


class NotAccepted(ProviderError):
    """The upstream did not take the job; nothing was or will be billed. Try the next one."""


class OutcomeUnknown(ProviderError):
    """The submit was sent but its outcome is unknown. Never resubmit or fail over."""


class Rejected(ProviderError):
    """The upstream refused this input as invalid."""


class TransientError(ProviderError):
    """A poll, cancel or fetch failed for a passing reason; the caller retries later."""


class ProtocolViolation(ProviderError):
    """The upstream's answer breaks its own contract (malformed body, unknown status value)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one provider can do for one model; routing skips providers that cannot serve a job."""

    max_input_images: int = 0
    max_loras: int = 0
    min_side: int = 256
    max_side: int = 2048
    formats: frozenset[str] = frozenset({"webp", "jpg", "png"})
    max_outputs: int = 1
    cancel: bool = False
    webhooks: bool = False


@dataclass(frozen=True, slots=True)
class PollTiming:
    """Adaptive polling for one provider: first poll after its typical queue time, then back off."""

    first_poll_after: float = 2.0
    backoff: float = 1.5
    cap: float = 10.0
    min_interval: float = 0.2


@dataclass(frozen=True, slots=True)
class Lora:
    path: str
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """Our normalised input, as handed to an adapter (never the client's raw JSON)."""

    job_id: str
    model: str  # the upstream's own model id (from the catalog)
    prompt: str
    width: int
    height: int
    aspect_ratio: str = "1:1"
    input_images: tuple[str, ...] = ()
    seed: int | None = None
    output_format: OutputFormat = "webp"
    output_quality: int = 80
    go_fast: bool = True
    disable_safety_checker: bool = False
    num_outputs: int = 1
    loras: tuple[Lora, ...] = ()
    webhook_url: str | None = None  # where the upstream should call us back, if we are public


class UpstreamStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (UpstreamStatus.SUCCEEDED, UpstreamStatus.FAILED, UpstreamStatus.CANCELED)


@dataclass(frozen=True, slots=True)
class UpstreamOutput:
    """One image the upstream produced. ``url`` may be http(s) or a ``data:`` URL."""

    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """What the upstream says about a job, already mapped to our vocabulary."""

    status: UpstreamStatus
    raw_status: str
    outputs: tuple[UpstreamOutput, ...] = ()
    seed: int | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    cost_micros: int | None = None  # when the upstream reports what it charged


@dataclass(frozen=True, slots=True)
class Submitted:
    """The upstream accepted the job. Synchronous upstreams return the finished ``state``."""

    upstream_id: str
    handle: Mapping[str, str] = field(default_factory=dict)  # e.g. fal's status/response URLs
    state: UpstreamState | None = None


@dataclass(frozen=True, slots=True)
class UpstreamRef:
    """Everything an adapter needs to follow a job it submitted earlier, in any process."""

    upstream_id: str
    request: UpstreamRequest
    handle: Mapping[str, str] = field(default_factory=dict)
    submitted_at: float = 0.0  # unix seconds


@dataclass(frozen=True, slots=True)
class WebhookUpdate:
    """An inbound upstream webhook, parsed.

    ``verified`` updates carry a trusted ``state``; unverified ones are hints that cause exactly
    one confirming poll. ``event_id`` (e.g. Standard Webhooks' ``webhook-id``) deduplicates replays.
    """

    upstream_id: str
    verified: bool
    state: UpstreamState | None = None
    event_id: str | None = None
    job_id: str | None = None  # our id when the upstream echoes it (adopting unknown submits)


class WebhookRefused(Exception):
    """An inbound webhook failed verification (bad signature, stale timestamp, bad body)."""


class Provider(Protocol):
    """An upstream that can run image jobs."""

    @property
    def name(self) -> str: ...

    def capabilities(self, model: str) -> Capabilities: ...

    def poll_timing(self) -> PollTiming: ...

    async def submit(self, request: UpstreamRequest) -> Submitted: ...

    async def poll(self, ref: UpstreamRef) -> UpstreamState: ...


@runtime_checkable
class Cancellable(Protocol):
    async def cancel(self, ref: UpstreamRef) -> None: ...


@runtime_checkable
class WebhookReceiver(Protocol):
    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate: ...


@runtime_checkable
class OutputSource(Protocol):
    """A provider whose outputs are not plain URLs (the simulator renders them on demand)."""

    async def fetch_output(self, ref: UpstreamRef, output: UpstreamOutput) -> bytes: ...
