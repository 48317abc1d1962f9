"""An emulator of Novita AI's async V3 API for FLUX.2 [dev] (`shared/spec/providers.md`, "Novita").

``POST /v3/async/flux-2-dev`` -> ``{"task_id"}``; ``GET /v3/async/task-result?task_id=`` -> the task
result, its status computed lazily from timestamps (queued -> processing -> succeed | failed);
``GET /files/{name}`` serves the outputs like the presigned S3 URLs do (expiring after
``Knobs.url_ttl``). Webhooks (``extra.webhook.url``) are posted unsigned, as Novita does.

Novita documents no error body, no validation status and no rate limits. Conservative choices here:
every error is ``{"code", "reason", "message"}`` (the adapter must not depend on it), validation
failures are 400, unknown body fields are refused, and a moderated or failed task is still paid.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
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

SUBMIT_PATH = "/v3/async/flux-2-dev"
RESULT_PATH = "/v3/async/task-result"
SIDES = range(256, 1537)
SEEDS = range(-1, 2147483648)
BODY_FIELDS = frozenset({"prompt", "size", "seed", "images", "loras", "extra"})
SIZE = re.compile(r"^(\d+)\*(\d+)$")
UNDOCUMENTED_STATUS = "TASK_STATUS_PAUSED"
MODERATED_REASON = "NSFW content detected in the generated image"
FAILED_REASON = "internal error: inference worker exited unexpectedly"
WEBHOOK_ATTEMPTS = 5  # Novita retries a webhook up to 5 times


@dataclass
class EmulatedTask:
    task_id: str
    prompt: str
    width: int
    height: int
    seed: int
    created: float
    queue_for: float
    run_for: float
    outcome: str  # "succeed" | "failed" | "moderated"
    ttl_as_string: bool  # Novita sends image_url_ttl as a number or a string: exercise both
    base_url: str
    webhook_url: str | None = None
    file_name: str | None = None


class NovitaEmulator:
    """Novita's wire protocol on loopback, with the shared knobs and a ledger of paid tasks."""

    def __init__(self, *, api_key: str = "novita-test-key", knobs: Knobs | None = None) -> None:
        self.api_key = api_key
        self.knobs = knobs or Knobs()
        self.ledger = Ledger()
        self.calls = Calls()
        self.files = FileHost()
        self.tasks: dict[str, EmulatedTask] = {}
        self.webhooks_sent: list[tuple[str, dict[str, Any]]] = []
        self._rng = make_rng(self.knobs)
        self._background: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route(SUBMIT_PATH, self._submit, methods=["POST"]),
                Route(RESULT_PATH, self._task_result, methods=["GET"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    def reset(self, knobs: Knobs | None = None) -> None:
        """Fresh knobs, ledger and history (the server keeps running)."""
        self.knobs = knobs or Knobs()
        self.ledger = Ledger()
        self.calls = Calls()
        self.tasks.clear()
        self.webhooks_sent.clear()
        self._rng = make_rng(self.knobs)

    @contextmanager
    def serve(self) -> Iterator[str]:
        with serve(self.app) as base_url:
            yield base_url

    # --- routes -------------------------------------------------------------------------------

    async def _submit(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "INVALID_JSON", "request body is not valid JSON")
        problem = _validate(body)
        if problem is not None:
            return _error(400, "INVALID_REQUEST_BODY", problem)
        if take(self.knobs, "submit_5xx"):
            return _error(500, "INTERNAL_ERROR", "failed to schedule the task")
        task = self._accept(body, str(request.base_url).rstrip("/"))
        if self.knobs.hang_submit_after_accept > 0:
            await asyncio.sleep(self.knobs.hang_submit_after_accept)
        return JSONResponse({"task_id": task.task_id})

    async def _task_result(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        if self.knobs.hang_polls > 0:
            await asyncio.sleep(self.knobs.hang_polls)
        if take(self.knobs, "malformed"):
            return Response(b"<html>upstream connect error</html>", media_type="application/json")
        task = self.tasks.get(request.query_params.get("task_id", ""))
        if task is None:
            return _error(404, "TASK_NOT_FOUND", "task not found")
        result = self.result(task, time.time())
        if take(self.knobs, "unknown_status"):
            result["task"]["status"] = UNDOCUMENTED_STATUS
        return JSONResponse(result)

    async def _file(self, request: Request) -> Response:
        stored = self.files.get(request.path_params["name"], once=self.knobs.serve_outputs_once)
        if stored is None:  # S3 answers an expired presigned URL with 403
            return Response(b"<Error><Code>AccessDenied</Code></Error>", status_code=403)
        return Response(stored.data, media_type=stored.content_type)

    # --- behaviour ----------------------------------------------------------------------------

    def _gate(self, request: Request) -> Response | None:
        self.calls.add(request.method, f"{request.url.path}?{request.url.query}")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "INVALID_API_KEY", "invalid api key")
        if take(self.knobs, "burst_429"):
            headers = {"retry-after": f"{self.knobs.retry_after:g}"}
            return _error(429, "RATE_LIMIT_EXCEEDED", "too many requests", headers)
        if take(self.knobs, "burst_5xx"):
            return _error(503, "SERVICE_UNAVAILABLE", "service temporarily unavailable")
        return None

    def _accept(self, body: dict[str, Any], base_url: str) -> EmulatedTask:
        width, height = _size(body.get("size", "1024*1024"))
        seed = body.get("seed", -1)
        roll = self._rng.random()
        if roll < self.knobs.moderation_rate:
            outcome = "moderated"
        elif roll < self.knobs.moderation_rate + self.knobs.failure_rate:
            outcome = "failed"
        else:
            outcome = "succeed"
        task = EmulatedTask(
            task_id=str(uuid.uuid4()),
            prompt=body["prompt"],
            width=width,
            height=height,
            seed=self._rng.randrange(2147483648) if seed == -1 else seed,
            created=time.time(),
            queue_for=self._rng.uniform(*self.knobs.queue_time),
            run_for=self._rng.uniform(*self.knobs.latency),
            outcome=outcome,
            ttl_as_string=len(self.tasks) % 2 == 1,
            base_url=base_url,
            webhook_url=body.get("extra", {}).get("webhook", {}).get("url"),
        )
        self.tasks[task.task_id] = task
        self.ledger.record(task.task_id, body)
        if task.webhook_url and self.knobs.webhooks:
            job = asyncio.get_running_loop().create_task(self._send_webhooks(task))
            self._background.add(job)
            job.add_done_callback(self._background.discard)
        return task

    def result(self, task: EmulatedTask, now: float) -> dict[str, Any]:
        """The task-result document for ``task`` as of ``now``."""
        elapsed = now - task.created
        status, reason, images = "TASK_STATUS_QUEUED", "", []
        progress, eta = 0, task.queue_for + task.run_for - elapsed
        if elapsed >= task.queue_for + task.run_for:
            progress, eta = 100, 0
            if task.outcome == "succeed":
                status, images = "TASK_STATUS_SUCCEED", [self._image(task)]
            else:
                status = "TASK_STATUS_FAILED"
                reason = MODERATED_REASON if task.outcome == "moderated" else FAILED_REASON
        elif elapsed >= task.queue_for:
            status = "TASK_STATUS_PROCESSING"
            progress = int(100 * (elapsed - task.queue_for) / max(task.run_for, 1e-6))
        return {
            "task": {
                "task_id": task.task_id,
                "task_type": "FLUX_2_DEV",
                "status": status,
                "reason": reason,
                "eta": max(0, round(eta)),
                "progress_percent": progress,
            },
            "images": images,
            "videos": [],
            "audios": [],
            "extra": {
                "seed": str(task.seed),
                "enable_nsfw_detection": False,
                "debug_info": _debug_info(task, now),
            },
        }

    def _image(self, task: EmulatedTask) -> dict[str, Any]:
        ttl = self.knobs.url_ttl
        if task.file_name is None:
            data, content_type = render_image(task.width, task.height, task.prompt, "png")
            task.file_name = f"{task.task_id}_0.png"
            self.files.put(task.file_name, data, content_type, ttl)
        signature = uuid.uuid5(uuid.NAMESPACE_URL, task.file_name).hex
        return {
            "image_url": f"{task.base_url}/files/{task.file_name}"
            f"?X-Amz-Expires={int(ttl)}&X-Amz-Signature={signature}",
            "image_type": "png",
            "image_url_ttl": str(int(ttl)) if task.ttl_as_string else int(ttl),
            "nsfw_detection_result": None,
        }

    async def _send_webhooks(self, task: EmulatedTask) -> None:
        await asyncio.sleep(task.queue_for + task.run_for)
        final = self.result(task, time.time())
        bodies = [final, final] if self.knobs.webhook_duplicate else [final]
        if self.knobs.webhook_out_of_order:
            stale = self.result(task, task.created + task.queue_for)
            stale["task"]["status"] = "TASK_STATUS_PROCESSING"
            bodies.append(stale)
        async with httpx.AsyncClient(timeout=5.0) as client:
            for payload in bodies:
                await self._post_webhook(client, task.webhook_url or "", payload)

    async def _post_webhook(
        self, client: httpx.AsyncClient, url: str, payload: dict[str, Any]
    ) -> None:
        body = {"event_type": "ASYNC_TASK_RESULT", "payload": payload}
        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                answer = await client.post(url, json=body)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code < 300:
                self.webhooks_sent.append((url, body))
                return
            await asyncio.sleep(0.05 * (attempt + 1))


def _debug_info(task: EmulatedTask, now: float) -> dict[str, str]:
    """Novita's timestamps as numeric strings ("0" until known: the docs' example shows "", but
    the official SDK parses these as integers while it polls, so real answers must be numeric)."""

    def ms(at: float) -> str:
        return str(int(at * 1000)) if at <= now else "0"

    started = task.created + task.queue_for
    return {
        "request_info": "",
        "submit_time_ms": ms(task.created),
        "execute_time_ms": ms(started),
        "complete_time_ms": ms(started + task.run_for),
    }


def _validate(body: Any) -> str | None:
    """The first problem with a submit body, worded like a validation error; None when valid."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    if "size" in body and (not isinstance(body["size"], str) or _size(body["size"]) == (0, 0)):
        return "size must be 'width*height' with each side in [256, 1536]"
    seed = body.get("seed", -1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in SEEDS:
        return "seed must be an integer in [-1, 2147483647]"
    images = body.get("images")
    if images is not None and (
        not isinstance(images, list)
        or not 1 <= len(images) <= 3
        or not all(isinstance(i, str) and i for i in images)
    ):
        return "images must be a list of 1 to 3 image URLs"
    loras = body.get("loras")
    if loras is not None and (
        not isinstance(loras, list) or len(loras) > 3 or not all(isinstance(x, dict) for x in loras)
    ):
        return "loras must be a list of at most 3 objects"
    extra = body.get("extra", {})
    webhook = extra.get("webhook") if isinstance(extra, dict) else None
    if not isinstance(extra, dict) or (
        webhook is not None
        and not (isinstance(webhook, dict) and isinstance(webhook.get("url"), str))
    ):
        return "extra.webhook.url must be a string"
    return None


def _size(value: str) -> tuple[int, int]:
    """(width, height) from "W*H"; (0, 0) when malformed or out of range."""
    match = SIZE.match(value)
    if match is None:
        return 0, 0
    width, height = int(match[1]), int(match[2])
    return (width, height) if width in SIDES and height in SIDES else (0, 0)


def _error(
    status: int, reason: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"code": status, "reason": reason, "message": message}, status_code=status, headers=headers
    )
