"""An emulator of synchronous OpenAI-style image APIs: Together AI or DeepInfra (one dialect each).

``POST {prefix}/images/generations`` runs the job inside the request (``Knobs.latency``) and answers
with the images: Together ``{"id", "model", "object": "list", "data": [{"index", "url"|"b64_json",
"type"}]}`` (url outputs served at ``/files/...``), DeepInfra ``{"created", "data": [{"b64_json",
"revised_prompt"}]}`` (always base64 JPEG, as in its documented example).

Unknowns, resolved conservatively: errors are OpenAI-shaped ``{"error": {"message", "type",
"code"}}`` for Together and ``{"detail": {"error"}}`` for DeepInfra (adapters must not depend on
either); unknown body fields are refused; a safety-checker refusal is 422 and paid (the model ran),
a failed generation is a 500 and not paid. There are no statuses, so ``Knobs.unknown_status`` does
nothing here, and no webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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

SIDES = range(256, 1441)
COUNTS = range(1, 5)
MODERATED_MESSAGE = "Image generation was flagged by the NSFW safety checker"


@dataclass(frozen=True)
class EmulatedDialect:
    name: str
    prefix: str  # the API base path: base_url = server URL + prefix
    model: str
    fields: frozenset[str]
    error: Callable[[int, str, str], JSONResponse]


def _together_error(status: int, code: str, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _deepinfra_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"error": message}}, status_code=status)


TOGETHER_FIELDS = """model prompt width height n steps seed guidance_scale response_format
    output_format loras disable_safety_checker reference_images negative_prompt"""

DIALECTS = {
    "together": EmulatedDialect(
        name="together",
        prefix="/v1",
        model="black-forest-labs/FLUX.2-dev",
        fields=frozenset(TOGETHER_FIELDS.split()),
        error=_together_error,
    ),
    "deepinfra": EmulatedDialect(
        name="deepinfra",
        prefix="/v1/openai",
        model="black-forest-labs/FLUX-2-dev",
        fields=frozenset({"model", "prompt", "size", "n"}),
        error=_deepinfra_error,
    ),
}


class OpenAIImagesEmulator:
    """One dialect of the synchronous images API on loopback, with knobs and a ledger."""

    def __init__(
        self,
        dialect: str = "together",
        *,
        api_key: str = "openai-images-test-key",
        knobs: Knobs | None = None,
    ) -> None:
        self.dialect = DIALECTS[dialect]
        self.api_key = api_key
        self.knobs = knobs or Knobs()
        self.ledger = Ledger()
        self.calls = Calls()
        self.files = FileHost()
        self.user_agents: list[str] = []
        self._rng = make_rng(self.knobs)
        self.app = Starlette(
            routes=[
                Route(
                    f"{self.dialect.prefix}/images/generations", self._generate, methods=["POST"]
                ),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    def reset(self, knobs: Knobs | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.ledger = Ledger()
        self.calls = Calls()
        self.user_agents.clear()
        self._rng = make_rng(self.knobs)

    def api_base(self, server_url: str) -> str:
        """The ``base_url`` an adapter is configured with for this emulator."""
        return f"{server_url}{self.dialect.prefix}"

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Yields the API base URL (server URL plus the dialect's prefix)."""
        with serve(self.app) as server_url:
            yield self.api_base(server_url)

    async def _generate(self, request: Request) -> Response:
        self.calls.add(request.method, request.url.path)
        self.user_agents.append(request.headers.get("user-agent", ""))
        error = self.dialect.error
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "invalid_api_key", "Invalid API key provided")
        if not request.headers.get("user-agent"):
            return error(403, "forbidden", "requests without a User-Agent are refused")
        if take(self.knobs, "burst_429"):
            response = error(429, "rate_limit_exceeded", "Rate limit exceeded")
            response.headers["retry-after"] = f"{self.knobs.retry_after:g}"
            return response
        if take(self.knobs, "burst_5xx") or take(self.knobs, "submit_5xx"):
            return error(503, "service_unavailable", "The server is overloaded")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error(400, "invalid_json", "request body is not valid JSON")
        problem = self._validate(body)
        if problem is not None:
            return error(
                400 if self.dialect.name == "together" else 422, "invalid_request", problem
            )
        roll = self._rng.random()
        if roll >= self.knobs.moderation_rate and roll < (
            self.knobs.moderation_rate + self.knobs.failure_rate
        ):
            return error(500, "generation_failed", "image generation failed")
        generation_id = f"gen-{uuid.uuid4().hex[:20]}"
        self.ledger.record(generation_id, body)
        await asyncio.sleep(self._rng.uniform(*self.knobs.queue_time))
        await asyncio.sleep(self._rng.uniform(*self.knobs.latency))
        if self.knobs.hang_submit_after_accept > 0:
            await asyncio.sleep(self.knobs.hang_submit_after_accept)
        if roll < self.knobs.moderation_rate:
            return error(422, "content_policy_violation", MODERATED_MESSAGE)
        if take(self.knobs, "malformed"):
            return Response(b"<html>502 Bad Gateway</html>", media_type="application/json")
        base = str(request.base_url).rstrip("/")
        return JSONResponse(self._answer(generation_id, body, base))

    def _validate(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "request body must be a JSON object"
        unknown = sorted(set(body) - self.dialect.fields)
        if unknown:
            return f"unknown parameter(s): {', '.join(unknown)}"
        if body.get("model") != self.dialect.model:
            return f"model {body.get('model')!r} is not available"
        if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
            return "prompt is required"
        if not _int_in(body.get("n", 1), COUNTS):
            return "n must be between 1 and 4"
        if self.dialect.name == "deepinfra":
            return None if _size(body.get("size", "1024x1024")) else "size must be 'WxH' in range"
        return _validate_together(body)

    def _answer(self, generation_id: str, body: dict[str, Any], base: str) -> dict[str, Any]:
        if self.dialect.name == "deepinfra":
            width, height = _size(body.get("size", "1024x1024")) or (1024, 1024)
            fmt, as_url = "jpeg", False
        else:
            width, height = body.get("width", 1024), body.get("height", 1024)
            fmt = body.get("output_format", "jpeg")
            as_url = body.get("response_format", "url") == "url"
        items: list[dict[str, Any]] = []
        for index in range(body.get("n", 1)):
            data, content_type = render_image(width, height, body["prompt"], fmt)
            if as_url:
                name = f"{generation_id}-{index}.{fmt}"
                self.files.put(name, data, content_type, self.knobs.url_ttl)
                items.append({"index": index, "url": f"{base}/files/{name}", "type": "url"})
            elif self.dialect.name == "together":
                b64 = base64.b64encode(data).decode()
                items.append({"index": index, "b64_json": b64, "type": "b64_json"})
            else:
                b64 = base64.b64encode(data).decode()
                items.append({"b64_json": b64, "revised_prompt": body["prompt"]})
        if self.dialect.name == "deepinfra":
            return {"created": int(time.time()), "data": items}
        return {"id": generation_id, "model": body["model"], "object": "list", "data": items}

    async def _file(self, request: Request) -> Response:
        if not request.headers.get("user-agent"):  # Together's CDN refuses an empty User-Agent
            return Response(b"forbidden", status_code=403)
        stored = self.files.get(request.path_params["name"], once=self.knobs.serve_outputs_once)
        if stored is None:
            return Response(b"not found", status_code=404)
        return Response(stored.data, media_type=stored.content_type)


def _validate_together(body: dict[str, Any]) -> str | None:
    if not _int_in(body.get("width", 1024), SIDES) or not _int_in(body.get("height", 1024), SIDES):
        return "width and height must be between 256 and 1440"
    if "seed" in body and not _int_in(body["seed"], range(2**63)):
        return "seed must be a non-negative integer"
    if body.get("response_format", "url") not in ("url", "base64"):
        return "response_format must be 'url' or 'base64'"
    if body.get("output_format", "jpeg") not in ("jpeg", "png"):
        return "output_format must be 'jpeg' or 'png'"
    if not isinstance(body.get("disable_safety_checker", False), bool):
        return "disable_safety_checker must be a boolean"
    images = body.get("reference_images", [])
    if (
        not isinstance(images, list)
        or len(images) > 1
        or not all(isinstance(url, str) and url for url in images)
    ):  # Together gives no maximum; the emulator holds the adapter to its declared one
        return "reference_images must be a list of at most 1 image URL"
    loras = body.get("loras", [])
    if (
        not isinstance(loras, list)
        or len(loras) > 1
        or not all(isinstance(lora, dict) and set(lora) == {"path", "scale"} for lora in loras)
    ):
        return "loras must be a list of at most 1 {path, scale}"
    return None


def _int_in(value: Any, allowed: range) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in allowed


def _size(value: Any) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)x(\d+)", value) if isinstance(value, str) else None
    if match is None:
        return None
    width, height = int(match[1]), int(match[2])
    return (width, height) if width in SIDES and height in SIDES else None
