"""An emulator of fal.ai's queue API for FLUX.2 [dev] (`shared/spec/providers.md`, "fal.ai").

Faithful parts: ``Authorization: Key <key>``; submit on ``/{owner}/{app}``, ``/{owner}/{app}/edit``
and ``/{owner}/{app}/lora`` (optionally ``?fal_webhook=``) answering the request id and the URLs
to use; status/result/cancel ONLY under ``/{owner}/{app}/requests/{id}`` (the endpoint sub-path is
dropped, so asking under ``/edit/requests/...`` is a 404, as it is at fal); status bodies
``IN_QUEUE`` (0-based ``queue_position``) / ``IN_PROGRESS`` / ``COMPLETED`` (``metrics``, and
``error``/``error_type`` when the request failed) with HTTP 202 until completed and 200 after;
validation 422 ``{"detail": [{"loc", "msg", "type"}]}``; infrastructure errors ``{"detail",
"error_type"}`` with ``X-Fal-Error-Type`` and ``X-Fal-Retryable``; webhooks ``{"request_id",
"gateway_request_id", "status": "OK"|"ERROR", "payload", "error"?}``.

Conservative choices where fal's contract is unknown (each one is stricter than fal may be):
- unknown body fields are refused (422 ``extra_forbidden``), ``image_urls`` only on ``/edit`` and
  at most 4, ``loras`` only on ``/lora`` and at most 3;
- a cancelled request (queued or running: the runner is assumed to honour the signal) reads
  ``COMPLETED`` with ``error_type: "request_cancelled"``; its result answers 400;
- a failed run reads ``COMPLETED`` with ``error_type: "runner_server_error"``, result 500;
- NSFW (``moderation_rate``, only with ``enable_safety_checker``) gives a black image flagged in
  ``has_nsfw_concepts``, as fal does; webhooks are not signed (no ED25519/JWKS here), so
  ``webhook_signed`` and ``webhook_out_of_order`` (fal sends one terminal webhook) have no effect;
- ``/files/...`` stands in for fal's CDN, a separate host: bursts and auth do not apply to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import httpx
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators.support import (
    Calls,
    FileHost,
    Knobs,
    Ledger,
    make_rng,
    render_image,
    serve,
    take,
)

IMAGE_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
CANCELLED_ERROR = ("Request was cancelled", "request_cancelled")
FAILED_ERROR = ("Internal server error", "runner_server_error")
ImageSizeName = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]
Side = Annotated[int, Field(ge=512, le=2048)]


class ImageSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: Side
    height: Side


class LoraWeight(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)
    scale: float = Field(default=1.0, ge=0, le=4)


class TextToImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    image_size: ImageSize | ImageSizeName = "landscape_4_3"
    num_inference_steps: int = Field(default=28, ge=4, le=50)
    guidance_scale: float = Field(default=2.5, ge=0, le=20)
    seed: int | None = None
    num_images: int = Field(default=1, ge=1, le=4)
    acceleration: Literal["none", "regular", "high"] = "regular"
    enable_safety_checker: bool = True
    output_format: Literal["jpeg", "png", "webp"] = "png"
    sync_mode: bool = False


class EditInput(TextToImageInput):
    image_urls: list[str] = Field(min_length=1, max_length=4)


class LoraInput(TextToImageInput):
    loras: list[LoraWeight] = Field(min_length=1, max_length=3)


ENDPOINT_INPUTS: dict[str, type[TextToImageInput]] = {
    "": TextToImageInput,
    "edit": EditInput,
    "lora": LoraInput,
}


@dataclass
class QueuedRequest:
    request_id: str
    app: str  # owner/alias: where its status lives
    endpoint: str  # the full endpoint id it was submitted to
    body: TextToImageInput
    base_url: str
    submitted_at: float
    started_at: float
    finished_at: float
    outcome: Literal["ok", "failed", "moderated"]
    webhook_url: str | None = None
    cancelled_at: float | None = None
    result: dict[str, Any] | None = None

    def phase(self, now: float) -> Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]:
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "COMPLETED"
        if now < self.started_at:
            return "IN_QUEUE"
        return "IN_PROGRESS" if now < self.finished_at else "COMPLETED"

    def error(self) -> tuple[str, str] | None:
        if self.cancelled_at is not None:
            return CANCELLED_ERROR
        return FAILED_ERROR if self.outcome == "failed" else None

    def urls(self) -> dict[str, str]:
        base = f"{self.base_url}/{self.app}/requests/{self.request_id}"
        return {
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }


@dataclass
class FalEmulator:
    api_key: str = "fal-emulator-key"
    apps: frozenset[str] = frozenset({"fal-ai/flux-2"})
    knobs: Knobs = field(default_factory=Knobs)
    ledger: Ledger = field(default_factory=Ledger)
    calls: Calls = field(default_factory=Calls)
    files: FileHost = field(default_factory=FileHost)
    requests: dict[str, QueuedRequest] = field(default_factory=dict)
    webhooks_sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = make_rng(self.knobs)
        self.app = Starlette(
            routes=[
                Route("/files/{name}", self.file, methods=["GET"]),
                Route("/{owner}/{alias}/requests/{rid}/status", self.status, methods=["GET"]),
                Route("/{owner}/{alias}/requests/{rid}/cancel", self.cancel, methods=["PUT"]),
                Route("/{owner}/{alias}/requests/{rid}", self.result, methods=["GET"]),
                Route("/{owner}/{alias}", self.submit, methods=["POST"]),
                Route("/{owner}/{alias}/{sub}", self.submit, methods=["POST"]),
            ]
        )

    def reset(self, knobs: Knobs | None = None) -> None:
        """Forget every request and count; start over with ``knobs`` (one server, many tests)."""
        self.knobs = knobs or Knobs()
        self.rng = make_rng(self.knobs)
        self.ledger, self.calls, self.files = Ledger(), Calls(), FileHost()
        self.requests.clear()
        self.webhooks_sent.clear()

    @contextmanager
    def serve(self, **config: Any) -> Iterator[str]:
        """``with emulator.serve() as base_url``; pass ``ssl_certfile``/``ssl_keyfile`` for TLS."""
        with serve(self.app, **config) as url:
            yield url

    # --- routes ---------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        owner, alias = request.path_params["owner"], request.path_params["alias"]
        sub = request.path_params.get("sub", "")
        app = f"{owner}/{alias}"
        if app not in self.apps or sub not in ENDPOINT_INPUTS:
            return _json(404, {"detail": f"Application '{app}/{sub}' not found"})
        raw = await request.body()
        try:
            body = ENDPOINT_INPUTS[sub].model_validate_json(raw)
        except ValidationError as exc:
            return _json(422, {"detail": _validation_detail(exc)})
        if take(self.knobs, "submit_5xx"):
            return _infra_error(503, "No runner could be allocated", "runner_scheduling_failure")
        queued = self._accept(request, app, f"{app}/{sub}".rstrip("/"), body)
        self.ledger.record(queued.request_id, json.loads(raw))  # what was sent, as sent
        if queued.webhook_url and self.knobs.webhooks:
            self._spawn(self._deliver_webhook(queued))
        if self.knobs.hang_submit_after_accept:
            await asyncio.sleep(self.knobs.hang_submit_after_accept)
        position = self._queue_position(queued, time.time())
        return _json(
            200,
            {"status": "IN_QUEUE", "request_id": queued.request_id, **queued.urls()}
            | {"queue_position": position},
        )

    async def status(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        queued = self._find(request)
        if queued is None:
            return _json(404, {"detail": "Request not found"})
        if self.knobs.hang_polls:
            await asyncio.sleep(self.knobs.hang_polls)
        if take(self.knobs, "malformed"):
            return Response("<html><body>upstream connect error</body></html>", 200)
        now = time.time()
        phase = queued.phase(now)
        with_logs = request.query_params.get("logs", "").lower() in ("1", "true")
        body: dict[str, Any] = {"status": phase, "request_id": queued.request_id, **queued.urls()}
        body["logs"] = [] if with_logs else None
        if phase == "IN_QUEUE":
            body["queue_position"] = self._queue_position(queued, now)
        if phase == "IN_PROGRESS" and with_logs:
            body["logs"] = [{"message": "Generating", "level": "INFO", "source": "user"}]
        if phase == "COMPLETED":
            body["metrics"] = {"inference_time": round(queued.finished_at - queued.started_at, 3)}
            error = queued.error()
            if error is not None:
                body["error"], body["error_type"] = error
        if take(self.knobs, "unknown_status"):
            body["status"] = "SUSPENDED"
        return _json(200 if phase == "COMPLETED" else 202, body)

    async def result(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        queued = self._find(request)
        if queued is None:
            return _json(404, {"detail": "Request not found"})
        if queued.phase(time.time()) != "COMPLETED":
            return _json(400, {"detail": "Request is still in progress"})
        if queued.cancelled_at is not None:
            return _json(400, {"detail": CANCELLED_ERROR[0]})
        if queued.outcome == "failed":
            return _infra_error(500, *FAILED_ERROR)
        return _json(200, self._result(queued))

    async def cancel(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        queued = self._find(request)
        if queued is None:
            return _json(404, {"status": "NOT_FOUND"})
        now = time.time()
        if queued.phase(now) == "COMPLETED":
            return _json(200, {"status": "ALREADY_COMPLETED"})
        queued.cancelled_at = now
        return _json(202, {"status": "CANCELLATION_REQUESTED"})

    async def file(self, request: Request) -> Response:
        self.calls.add(request.method, request.url.path)
        stored = self.files.get(request.path_params["name"], once=self.knobs.serve_outputs_once)
        if stored is None:
            return _json(404, {"detail": "Not Found"})
        return Response(stored.data, 200, media_type=stored.content_type)

    # --- behaviour ------------------------------------------------------------------------

    def _gate(self, request: Request) -> Response | None:
        """Log the call; answer the auth failure or a knob-driven burst, else ``None``."""
        self.calls.add(request.method, request.url.path)
        if request.headers.get("authorization") != f"Key {self.api_key}":
            return _json(401, {"detail": "Invalid API key"})
        if take(self.knobs, "burst_429"):
            headers = {"Retry-After": f"{self.knobs.retry_after:g}"}
            return _json(429, {"detail": "Rate limit exceeded"}, headers)
        if take(self.knobs, "burst_5xx"):
            return _infra_error(503, "No runner could be allocated", "runner_scheduling_failure")
        return None

    def _accept(
        self, request: Request, app: str, endpoint: str, body: TextToImageInput
    ) -> QueuedRequest:
        now = time.time()
        started = now + self.rng.uniform(*self.knobs.queue_time)
        outcome: Literal["ok", "failed", "moderated"] = "ok"
        if self.rng.random() < self.knobs.failure_rate:
            outcome = "failed"
        elif body.enable_safety_checker and self.rng.random() < self.knobs.moderation_rate:
            outcome = "moderated"
        queued = QueuedRequest(
            request_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            app=app,
            endpoint=endpoint,
            body=body,
            base_url=str(request.base_url).rstrip("/"),
            submitted_at=now,
            started_at=started,
            finished_at=started + self.rng.uniform(*self.knobs.latency),
            outcome=outcome,
            webhook_url=request.query_params.get("fal_webhook"),
        )
        self.requests[queued.request_id] = queued
        return queued

    def _find(self, request: Request) -> QueuedRequest | None:
        queued = self.requests.get(request.path_params["rid"])
        app = f"{request.path_params['owner']}/{request.path_params['alias']}"
        return queued if queued is not None and queued.app == app else None

    def _queue_position(self, queued: QueuedRequest, now: float) -> int:
        return sum(
            1
            for other in self.requests.values()
            if other.submitted_at < queued.submitted_at and other.phase(now) == "IN_QUEUE"
        )

    def _result(self, queued: QueuedRequest) -> dict[str, Any]:
        """Render the outputs once (lazily) and keep the result body."""
        if queued.result is not None:
            return queued.result
        body = queued.body
        width, height = _size(body)
        ext = "jpg" if body.output_format == "jpeg" else body.output_format
        flagged = queued.outcome == "moderated"
        images = []
        for index in range(body.num_images):
            if flagged:
                data, content_type = _black_image(width, height, ext)
            else:
                data, content_type = render_image(width, height, body.prompt, ext)
            name = f"{queued.request_id}-{index}.{ext}"
            self.files.put(name, data, content_type, self.knobs.url_ttl)
            images.append(
                {
                    "url": f"{queued.base_url}/files/{name}",
                    "content_type": content_type,
                    "file_name": name,
                    "file_size": len(data),
                    "width": width,
                    "height": height,
                }
            )
        seed = body.seed if body.seed is not None else self.rng.randrange(2**31)
        queued.result = {
            "images": images,
            "seed": seed,
            "prompt": body.prompt,
            "has_nsfw_concepts": [flagged] * body.num_images,
            "timings": {"inference": round(queued.finished_at - queued.started_at, 3)},
        }
        return queued.result

    async def _deliver_webhook(self, queued: QueuedRequest) -> None:
        await asyncio.sleep(max(0.0, queued.finished_at - time.time()))
        body: dict[str, Any] = {
            "request_id": queued.request_id,
            "gateway_request_id": queued.request_id,
        }
        error = queued.error()
        if error is None:
            body |= {"status": "OK", "payload": self._result(queued)}
        else:
            body |= {"status": "ERROR", "error": error[0], "payload": {"detail": error[0]}}
        assert queued.webhook_url is not None
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(2 if self.knobs.webhook_duplicate else 1):
                self.webhooks_sent.append((queued.webhook_url, body))
                # fal retries for hours; the emulator just gives up on a failed delivery.
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(queued.webhook_url, json=body)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _size(body: TextToImageInput) -> tuple[int, int]:
    if isinstance(body.image_size, ImageSize):
        return body.image_size.width, body.image_size.height
    return IMAGE_SIZES[body.image_size]


def _black_image(width: int, height: int, ext: str) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    pil_format = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    Image.new("RGB", (width, height)).save(buffer, format=pil_format)
    return buffer.getvalue(), f"image/{'jpeg' if ext == 'jpg' else ext}"


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False)
    ]


def _infra_error(status: int, detail: str, error_type: str) -> Response:
    headers = {"X-Fal-Error-Type": error_type, "X-Fal-Retryable": "true"}
    return _json(status, {"detail": detail, "error_type": error_type}, headers)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status, headers=headers)
