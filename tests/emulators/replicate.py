"""Replicate emulator: the prediction API for ``black-forest-labs/flux-2-dev`` on a loopback port.

Faithful to `shared/spec/providers.md` ("Replicate") and to what the official ``replicate`` SDK
parses: create (model route or version route, ``Prefer: wait``, ``Cancel-After``), get, cancel,
list, the default webhook secret, RFC 7807 errors, and Standard Webhooks deliveries. A prediction's
progress is computed from timestamps when it is looked at; only webhook delivery runs as a task.

core.today proxies Replicate: its emulator reuses ``Run``, ``validate_input`` and ``WebhookSink``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.config import ProviderSettings
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

MODEL = "black-forest-labs/flux-2-dev"
VERSION = "7bba46bdde863cfd7aaee87649a5aa49f39f368495dbea500998d1fcbb262050"
EVENTS = frozenset({"start", "output", "logs", "completed"})
# Output sizes per aspect ratio. Replicate does not publish flux-2-dev's table; these are ~1 MP
# multiples of 32. ``match_input_image`` would need the input fetched: we answer 1024x1024.
ASPECT_SIZES = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "3:2": (1248, 832),
    "2:3": (832, 1248), "4:5": (896, 1120), "5:4": (1120, 896), "3:4": (896, 1184),
    "4:3": (1184, 896), "match_input_image": (1024, 1024),
}  # fmt: skip
FORMATS = ("webp", "jpg", "png")
NSFW_ERROR = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)
SENSITIVE_ERROR = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
FAILED_ERROR = "Prediction interrupted; please retry (code: PA)"
THROTTLED = "Request was throttled. Your rate limit resets in ~{n}s."
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def validate_input(value: object) -> list[dict[str, str]]:
    """flux-2-dev's input schema; returns Replicate-style ``invalid_fields`` (empty when valid).

    Unknown keys are refused although Replicate ignores them: strictness catches adapter typos.
    """
    if not isinstance(value, dict):
        return [_invalid("input", "type", "Invalid type. Expected: object")]
    errors: list[dict[str, str]] = []
    if not isinstance(value.get("prompt"), str):
        errors.append(_invalid("input.prompt", "required", "prompt is required (string)"))
    for key, item in value.items():
        problem = _check_field(key, item)
        if problem:
            errors.append(_invalid(f"input.{key}", "invalid", problem))
    return errors


def _check_field(key: str, item: object) -> str | None:
    if key == "prompt":
        return None
    if key in ("go_fast", "disable_safety_checker"):
        return None if isinstance(item, bool) else "Invalid type. Expected: boolean"
    if key in ("width", "height"):
        return None if _int_in(item, 256, 1440) else "Must be an integer in 256..1440"
    if key == "output_quality":
        return None if _int_in(item, 0, 100) else "Must be an integer in 0..100"
    if key == "seed":
        return None if _int_in(item, -(2**63), 2**63) else "Invalid type. Expected: integer"
    if key == "aspect_ratio":
        ok = item in ASPECT_SIZES or item == "custom"
        return None if ok else f"aspect_ratio must be one of {[*ASPECT_SIZES, 'custom']}"
    if key == "output_format":
        return None if item in FORMATS else f"output_format must be one of {list(FORMATS)}"
    if key == "input_images":
        if not isinstance(item, list) or len(item) > 4:
            return "Must be an array of at most 4 items"
        if not all(
            isinstance(u, str) and u.startswith(("http://", "https://", "data:image/"))
            for u in item
        ):
            return "Each item must be a URL or a data URL"
        return None
    return f"Additional property {key} is not allowed"


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _invalid(fieldname: str, kind: str, description: str) -> dict[str, str]:
    return {"type": kind, "field": fieldname, "description": description}


def output_size(inputs: dict[str, Any]) -> tuple[int, int]:
    ratio = inputs.get("aspect_ratio", "1:1")
    if ratio == "custom":
        return (_round32(inputs.get("width", 1024)), _round32(inputs.get("height", 1024)))
    return ASPECT_SIZES[ratio]


def _round32(value: int) -> int:
    return max(32, round(value / 32) * 32)


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_duration(value: str) -> float | None:
    """``Cancel-After``: a Go-style duration (``90s``, ``1m30s``, ``500ms``) or bare seconds."""
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_prefer_wait(value: str | None) -> float | None:
    """``Prefer: wait`` (60 s) or ``Prefer: wait=N`` (1..60); None when no wait was asked."""
    for preference in (value or "").split(","):
        name, _, arg = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return float(min(60, max(1, int(arg)))) if arg else 60.0
            except ValueError:
                return 60.0
    return None


@dataclass
class Run:
    """One accepted prediction; its status is a function of the clock."""

    id: str
    inputs: dict[str, Any]
    created: float
    starts: float
    ends: float
    outcome: str  # "succeeded" | "failed" | "moderated"
    seed: int
    base_url: str
    webhook: str | None = None
    events: frozenset[str] = EVENTS
    cancel_at: float | None = None  # a cancel call, or the Cancel-After deadline
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def canceled(self) -> bool:
        return self.cancel_at is not None and self.cancel_at < self.ends

    @property
    def finished_at(self) -> float:
        return self.cancel_at if self.canceled and self.cancel_at is not None else self.ends

    def status(self, now: float) -> str:
        if now >= self.finished_at:
            if self.canceled:
                return "canceled"
            return "succeeded" if self.outcome == "succeeded" else "failed"
        return "starting" if now < self.starts else "processing"

    def cancel(self, now: float) -> None:
        if now < self.finished_at:
            self.cancel_at = now
            self.changed.set()

    async def settle(self, until: float) -> None:
        """Sleep until ``until`` or the run's end, whichever comes first (wakes on a cancel)."""
        while (now := time.time()) < until and now < self.finished_at:
            self.changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(until, self.finished_at) - now)


def draw_run(
    rng: random.Random, knobs: Knobs, run_id: str, inputs: dict[str, Any], request: Request
) -> Run:
    """A new run whose queue time, running time and outcome are drawn from the knobs."""
    now = time.time()
    queued = rng.uniform(*knobs.queue_time)
    draw = rng.random()
    outcome = "succeeded"
    if draw < knobs.moderation_rate:
        outcome = "moderated"
    elif draw < knobs.moderation_rate + knobs.failure_rate:
        outcome = "failed"
    return Run(
        id=run_id,
        inputs=inputs,
        created=now,
        starts=now + queued,
        ends=now + queued + rng.uniform(*knobs.latency),
        outcome=outcome,
        seed=inputs["seed"] if "seed" in inputs else rng.randrange(2**31),
        base_url=str(request.base_url).rstrip("/"),
    )


def random_id(rng: random.Random) -> str:
    """A Replicate-looking prediction id: 26 lowercase base32 characters."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(26))


def failure_message(run: Run) -> str:
    if run.outcome != "moderated":
        return FAILED_ERROR
    return SENSITIVE_ERROR if run.inputs.get("disable_safety_checker") else NSFW_ERROR


def render_output(files: FileHost, run: Run, ttl: float) -> str:
    """Render the run's image once (real bytes, asked size and format); return its URL."""
    fmt = run.inputs.get("output_format", "webp")
    name = f"{run.id}/out-0.{fmt}"
    if name not in files.files:
        width, height = output_size(run.inputs)
        data, content_type = render_image(width, height, run.inputs["prompt"], fmt)
        files.put(name, data, content_type, run.finished_at + ttl - time.time())
    return f"{run.base_url}/files/{name}"


@dataclass
class Delivery:
    webhook_id: str
    status: str
    http_status: int | None


class ReplicateEmulator:
    """``with ReplicateEmulator(knobs).serve() as base_url``: the adapter's base_url goes there."""

    def __init__(self, knobs: Knobs | None = None, *, api_key: str = "r8_emulator_token") -> None:
        self.api_key = api_key
        self._tasks: set[asyncio.Task[None]] = set()
        self.reset(knobs)
        self.webhook_secret = "whsec_" + base64.b64encode(self.rng.randbytes(32)).decode()
        self.app = Starlette(
            routes=[
                Route(
                    "/v1/models/{owner}/{name}/predictions", self.create_for_model, methods=["POST"]
                ),
                Route("/v1/predictions", self.create_for_version, methods=["POST"]),
                Route("/v1/predictions", self.list_predictions, methods=["GET"]),
                Route("/v1/predictions/{id}", self.get_prediction, methods=["GET"]),
                Route("/v1/predictions/{id}/cancel", self.cancel_prediction, methods=["POST"]),
                Route("/v1/webhooks/default/secret", self.default_secret, methods=["GET"]),
                Route("/files/{name:path}", self.get_file, methods=["GET"]),
            ]
        )

    def reset(self, knobs: Knobs | None = None) -> None:
        """Forget every prediction, file, call and ledger entry (one server, many tests)."""
        self.knobs = knobs or Knobs()
        self.rng = make_rng(self.knobs)
        self.ledger = Ledger()
        self.calls = Calls()
        self.files = FileHost()
        self.runs: dict[str, Run] = {}
        self.deliveries: list[Delivery] = []

    @contextmanager
    def serve(self, **config: Any) -> Iterator[str]:
        with serve(self.app, **config) as base_url:
            yield base_url

    def provider_settings(self, base_url: str, **overrides: Any) -> ProviderSettings:
        """Adapter settings that talk to this emulator (``kind="replicate"``)."""
        fields: dict[str, Any] = {
            "kind": "replicate",
            "api_key": self.api_key,
            "base_url": base_url,
            "webhook_secret": self.webhook_secret,
        }
        return ProviderSettings(**(fields | overrides))

    # --- routes ---------------------------------------------------------------------------

    async def create_for_model(self, request: Request) -> Response:
        refused = self._gate(request, submit=True)
        if refused is not None:
            return refused
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        if model != MODEL:
            return problem(404, "Not found", f"Model {model} does not exist")
        return await self._create(request, None)

    async def create_for_version(self, request: Request) -> Response:
        refused = self._gate(request, submit=True)
        if refused is not None:
            return refused
        return await self._create(request, VERSION)

    async def get_prediction(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        if self.knobs.hang_polls:
            await asyncio.sleep(self.knobs.hang_polls)
        run = self.runs.get(request.path_params["id"])
        if run is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        if take(self.knobs, "malformed"):
            return Response(
                b'{"id": "' + run.id.encode() + b'", "status": ', media_type="application/json"
            )
        body = self.prediction(run, time.time())
        if take(self.knobs, "unknown_status"):
            body["status"] = "booting"
        return JSONResponse(body)

    async def cancel_prediction(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        run = self.runs.get(request.path_params["id"])
        if run is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        run.cancel(time.time())
        return JSONResponse(self.prediction(run, time.time()))

    async def list_predictions(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        cursor = request.query_params.get("cursor") or "0"
        if not cursor.isdigit():
            return problem(400, "Bad Request", "Invalid cursor")
        offset = int(cursor)
        runs = sorted(self.runs.values(), key=lambda r: r.created, reverse=True)
        page = runs[offset : offset + 100]
        base = str(request.base_url).rstrip("/")
        more = offset + 100 < len(runs)
        return JSONResponse(
            {
                "previous": f"{base}/v1/predictions?cursor={offset - 100}" if offset else None,
                "next": f"{base}/v1/predictions?cursor={offset + 100}" if more else None,
                "results": [self.prediction(r, time.time()) for r in page],
            }
        )

    async def default_secret(self, request: Request) -> Response:
        refused = self._gate(request)
        return refused or JSONResponse({"key": self.webhook_secret})

    async def get_file(self, request: Request) -> Response:
        # replicate.delivery is a public CDN: no auth, no bursts.
        stored = self.files.get(request.path_params["name"], once=self.knobs.serve_outputs_once)
        if stored is None:
            return Response(b"Not Found", status_code=404)
        return Response(stored.data, media_type=stored.content_type)

    # --- behaviour ------------------------------------------------------------------------

    def _gate(self, request: Request, *, submit: bool = False) -> Response | None:
        """Auth, then the burst knobs; None when the call goes through."""
        self.calls.add(request.method, request.url.path)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if take(self.knobs, "burst_429"):
            wait = self.knobs.retry_after
            return JSONResponse(
                {"detail": THROTTLED.format(n=max(1, round(wait))), "status": 429},
                status_code=429,
                headers={"Retry-After": f"{wait:g}"},
            )
        if take(self.knobs, "burst_5xx"):
            return problem(503, "Service Unavailable", "Replicate is temporarily unavailable")
        if submit and take(self.knobs, "submit_5xx"):
            return problem(
                500, "Internal Server Error", "Something went wrong creating the prediction"
            )
        return None

    async def _create(self, request: Request, pinned: str | None) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return problem(400, "Bad Request", "The request body is not valid JSON")
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The request body must be a JSON object")
        if pinned is not None and body.get("version") != pinned:
            return problem(
                422, "Invalid version or not permitted", "The specified version does not exist"
            )
        invalid = validate_input(body.get("input"))
        invalid += _validate_webhook(body)
        if invalid:
            detail = "".join(f"- {e['field']}: {e['description']}\n" for e in invalid)
            return problem(422, "Input validation failed", detail, invalid_fields=invalid)
        run = self._accept(body, request)
        cancel_after = parse_duration(request.headers.get("cancel-after", ""))
        if cancel_after is not None:
            run.cancel_at = run.created + cancel_after
        if self.knobs.hang_submit_after_accept:
            await asyncio.sleep(self.knobs.hang_submit_after_accept)
        wait = parse_prefer_wait(request.headers.get("prefer"))
        if wait is not None:
            await run.settle(run.created + wait)
        answer = self.prediction(run, time.time())
        if answer["status"] == "processing":
            # A create answers an unfinished prediction as "starting", also after ``Prefer:
            # wait``: the SDK treats any other status in a blocking answer as final.
            answer["status"] = "starting"
        return JSONResponse(answer, status_code=201)

    def _accept(self, body: dict[str, Any], request: Request) -> Run:
        run = draw_run(self.rng, self.knobs, random_id(self.rng), body["input"], request)
        run.webhook = body.get("webhook")
        run.events = frozenset(body.get("webhook_events_filter") or EVENTS)
        self.runs[run.id] = run
        # Paid once accepted. (Replicate does not bill a run that Cancel-After aborts before it
        # starts; the ledger still lists it, erring towards "money may have been spent".)
        self.ledger.record(run.id, body)
        if run.webhook and self.knobs.webhooks:
            self._spawn(self._deliver_webhooks(run))
        return run

    def prediction(self, run: Run, now: float) -> dict[str, Any]:
        """The prediction object as the API shows it at ``now``."""
        status = run.status(now)
        terminal = status in ("succeeded", "failed", "canceled")
        started = run.starts if now >= run.starts and run.starts < run.finished_at else None
        removed = terminal and now > run.finished_at + self.knobs.url_ttl
        output = (
            render_output(self.files, run, self.knobs.url_ttl)
            if status == "succeeded" and not removed
            else None
        )
        error = failure_message(run) if status == "failed" else None
        metrics: dict[str, float] = {}
        if terminal:
            metrics = {"total_time": run.finished_at - run.created}
            if started is not None:
                metrics["predict_time"] = run.finished_at - started
        logs = "" if started is None else f"Using seed: {run.seed}\n"
        if terminal and started is not None:
            logs += "100%|##########| 28/28 [00:04<00:00]\n"
        get_url = f"{run.base_url}/v1/predictions/{run.id}"
        return {
            "id": run.id,
            "model": MODEL,
            "version": VERSION,
            "status": status,
            "input": {} if removed else run.inputs,
            "output": output,
            "logs": logs,
            "error": error,
            "metrics": metrics,
            "created_at": iso(run.created),
            "started_at": iso(started),
            "completed_at": iso(run.finished_at) if terminal else None,
            "urls": {"get": get_url, "cancel": f"{get_url}/cancel"},
            "data_removed": removed,
        }

    # --- webhooks -------------------------------------------------------------------------

    async def _deliver_webhooks(self, run: Run) -> None:
        assert run.webhook is not None
        await run.settle(run.starts)
        start_id = f"msg_{self.rng.getrandbits(64):016x}"
        stale = self.prediction(run, run.starts)
        stale["status"] = "processing"  # what a "start" event carries, even when delivered late
        if run.status(time.time()) == "processing" and not self.knobs.webhook_out_of_order:
            await self._send_events(
                run, {"start", "logs"}, self.prediction(run, time.time()), start_id
            )
        await run.settle(float("inf"))
        final = self.prediction(run, time.time())
        if final["status"] == "succeeded":
            await self._send_events(run, {"output"}, final, f"msg_{self.rng.getrandbits(64):016x}")
        await self._send_events(run, {"completed"}, final, f"msg_{self.rng.getrandbits(64):016x}")
        if self.knobs.webhook_out_of_order:
            await self._send(run.webhook, start_id, stale)

    async def _send_events(
        self, run: Run, events: set[str], body: dict[str, Any], msg_id: str
    ) -> None:
        if run.webhook and events & run.events:
            await self._send(run.webhook, msg_id, body)

    async def _send(self, url: str, msg_id: str, body: dict[str, Any]) -> None:
        """One event: retried a few times on failure, sent twice with the duplicate knob."""
        payload = orjson.dumps(body)
        for _ in range(2 if self.knobs.webhook_duplicate else 1):
            http_status = None
            for attempt in range(3):
                http_status = await self._post(url, msg_id, payload)
                if http_status is not None and http_status < 300:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
            self.deliveries.append(Delivery(msg_id, body["status"], http_status))

    async def _post(self, url: str, msg_id: str, payload: bytes) -> int | None:
        timestamp = str(int(time.time()))
        if self.knobs.webhook_signed:
            signature = sign(self.webhook_secret, msg_id, timestamp, payload)
        else:
            signature = "v1," + base64.b64encode(self.rng.randbytes(32)).decode()
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature,
        }
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.post(url, content=payload, headers=headers)).status_code
        except httpx.HTTPError:
            return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def sign(secret: str, msg_id: str, timestamp: str, payload: bytes) -> str:
    """Standard Webhooks v1 signature, written out from the spec (independent of the library)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 7807 problem document, as Replicate answers errors."""
    body = {"type": f"https://replicate.com/docs/reference/http#{status}", "title": title,
            "status": status, "detail": detail, **extra}  # fmt: skip
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _validate_webhook(body: dict[str, Any]) -> list[dict[str, str]]:
    errors = []
    hook = body.get("webhook")
    if hook is not None and not (
        isinstance(hook, str) and hook.startswith(("http://", "https://"))
    ):
        errors.append(_invalid("webhook", "format", "Does not match format 'uri'"))
    events = body.get("webhook_events_filter")
    if events is not None and not (isinstance(events, list) and set(events) <= EVENTS):
        errors.append(
            _invalid("webhook_events_filter", "enum", f"Items must be in {sorted(EVENTS)}")
        )
    return errors


@dataclass
class WebhookSink:
    """A loopback receiver that records every webhook delivery (headers, body) for tests."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", receive, methods=["POST"])])

    @contextmanager
    def serve(self) -> Iterator[str]:
        with serve(self.app) as base_url:
            yield f"{base_url}/hook"

    async def wait_for(
        self, count: int, timeout: float = 5.0
    ) -> list[tuple[dict[str, str], bytes]]:
        """The deliveries so far, once at least ``count`` arrived (or the timeout passed)."""
        deadline = time.time() + timeout
        while len(self.received) < count and time.time() < deadline:
            await asyncio.sleep(0.01)
        return list(self.received)
