"""core.today emulator: its prediction API for ``black-forest-labs/flux-2-dev`` on a loopback port.

Faithful to `shared/spec/providers.md` ("core.today") and the seed
`shared/seeds/core-today-flux-2-dev.txt`: ``/v1/predictions`` (create, get, cancel with
``DELETE``), ``X-API-Key`` or Bearer auth, and unsigned webhooks. Two answer shapes are
documented, so the emulator answers in either (``shape="seed"`` or ``shape="replicate"``).
core.today proxies Replicate: runs, input validation and images come from the Replicate emulator.

Unknown facts and the conservative choice made for each:
- error bodies: ``{"detail": ...}`` for 401/404/422 (FastAPI style), ``{"error": ...}`` for
  429/5xx; the adapter reads only status codes and Retry-After;
- the output: one URL string in the seed shape (Replicate's own output for this model), a list in
  the Replicate shape (as core.today's example shows);
- webhooks: only ``completed`` and ``failed`` events are accepted, sent unsigned with the job
  body; a cancel sends none; deliveries are retried a few times on failure;
- cancelling a finished job answers the job unchanged (as Replicate does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.config import ProviderSettings
from tests.emulators.replicate import (
    MODEL,
    Run,
    draw_run,
    failure_message,
    iso,
    random_id,
    render_output,
    validate_input,
)
from tests.emulators.support import Calls, FileHost, Knobs, Ledger, make_rng, serve, take

Shape = Literal["seed", "replicate"]
EVENTS = frozenset({"completed", "failed"})
SEED_STATUS = {
    "starting": "pending",
    "processing": "processing",
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "cancelled",
}


class CoreTodayEmulator:
    """``with CoreTodayEmulator(knobs, shape="seed").serve() as base_url``; adapter base: +/v1."""

    def __init__(
        self, knobs: Knobs | None = None, *, shape: Shape = "seed", api_key: str = "ct_emulator"
    ) -> None:
        self.shape: Shape = shape
        self.api_key = api_key
        self._tasks: set[asyncio.Task[None]] = set()
        self.reset(knobs)
        self.app = Starlette(
            routes=[
                Route("/v1/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions/{job_id}", self.get, methods=["GET"]),
                Route("/v1/predictions/{job_id}", self.cancel, methods=["DELETE"]),
                Route("/files/{name:path}", self.get_file, methods=["GET"]),
            ]
        )

    def reset(self, knobs: Knobs | None = None) -> None:
        """Forget every job, file, call and ledger entry (one server, many tests)."""
        self.knobs = knobs or Knobs()
        self.rng = make_rng(self.knobs)
        self.ledger = Ledger()
        self.calls = Calls()
        self.files = FileHost()
        self.runs: dict[str, Run] = {}
        self.deliveries: list[tuple[str, int | None]] = []  # (status, HTTP answer)

    @contextmanager
    def serve(self, **config: Any) -> Iterator[str]:
        with serve(self.app, **config) as base_url:
            yield base_url

    def provider_settings(self, base_url: str, **overrides: Any) -> ProviderSettings:
        """Adapter settings that talk to this emulator (``kind="coretoday"``)."""
        fields: dict[str, Any] = {
            "kind": "coretoday",
            "api_key": self.api_key,
            "base_url": f"{base_url}/v1",
        }
        return ProviderSettings(**(fields | overrides))

    # --- routes ---------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        refused = self._gate(request, submit=True)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return detail(400, "Invalid JSON body")
        if not isinstance(body, dict):
            return detail(400, "Invalid JSON body")
        if body.get("model") != MODEL:
            return detail(404, f"Model not found: {body.get('model')}")
        problems = [
            {"loc": ["body", *e["field"].split(".")], "msg": e["description"], "type": e["type"]}
            for e in validate_input(body.get("input"))
        ]
        events = body.get("webhook_events")
        if events is not None and not (isinstance(events, list) and set(events) <= EVENTS):
            problems.append(
                {"loc": ["body", "webhook_events"], "msg": "unsupported event", "type": "enum"}
            )
        if problems:
            return JSONResponse({"detail": problems}, status_code=422)
        run = self._accept(body, request)
        if self.knobs.hang_submit_after_accept:
            await asyncio.sleep(self.knobs.hang_submit_after_accept)
        answer = self.job(run, time.time())
        answer["status"] = self._status("starting")  # a create always answers the queued state
        return JSONResponse(answer, status_code=201)

    async def get(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        if self.knobs.hang_polls:
            await asyncio.sleep(self.knobs.hang_polls)
        run = self.runs.get(request.path_params["job_id"])
        if run is None:
            return detail(404, "Prediction not found")
        if take(self.knobs, "malformed"):
            return Response(b"<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        body = self.job(run, time.time())
        if take(self.knobs, "unknown_status"):
            body["status"] = "queued_on_gpu"
        return JSONResponse(body)

    async def cancel(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        run = self.runs.get(request.path_params["job_id"])
        if run is None:
            return detail(404, "Prediction not found")
        run.cancel(time.time())
        return JSONResponse(self.job(run, time.time()))

    async def get_file(self, request: Request) -> Response:
        stored = self.files.get(request.path_params["name"], once=self.knobs.serve_outputs_once)
        if stored is None:
            return Response(b"Not Found", status_code=404)
        return Response(stored.data, media_type=stored.content_type)

    # --- behaviour ------------------------------------------------------------------------

    def _gate(self, request: Request, *, submit: bool = False) -> Response | None:
        self.calls.add(request.method, request.url.path)
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (key, bearer):
            return detail(401, "Invalid or missing API key")
        if take(self.knobs, "burst_429"):
            return JSONResponse(
                {"error": "Rate limit exceeded"},
                status_code=429,
                headers={"Retry-After": f"{self.knobs.retry_after:g}"},
            )
        if take(self.knobs, "burst_5xx"):
            return JSONResponse({"error": "Service temporarily unavailable"}, status_code=503)
        if submit and take(self.knobs, "submit_5xx"):
            return JSONResponse({"error": "Internal server error"}, status_code=500)
        return None

    def _accept(self, body: dict[str, Any], request: Request) -> Run:
        if self.shape == "replicate":
            run_id = f"pred_{random_id(self.rng)}"
        else:
            run_id = f"{self.rng.getrandbits(128):032x}"
        run = draw_run(self.rng, self.knobs, run_id, body["input"], request)
        run.webhook = body.get("webhook")
        run.events = frozenset(body.get("webhook_events") or EVENTS)
        self.runs[run.id] = run
        self.ledger.record(run.id, body)
        if run.webhook and self.knobs.webhooks:
            task = asyncio.get_running_loop().create_task(self._deliver_webhooks(run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return run

    def _status(self, replicate_status: str) -> str:
        return SEED_STATUS[replicate_status] if self.shape == "seed" else replicate_status

    def job(self, run: Run, now: float) -> dict[str, Any]:
        """The job as core.today shows it at ``now``, in this emulator's shape."""
        status = run.status(now)
        url = render_output(self.files, run, self.knobs.url_ttl) if status == "succeeded" else None
        error = failure_message(run) if status == "failed" else None
        if self.shape == "seed":
            return {
                "job_id": run.id,
                "status": self._status(status),
                "provider": "replicate",
                "model": MODEL,
                "created_at": iso(run.created),
                "result": url,
                "error": error,
            }
        terminal = status in ("succeeded", "failed", "canceled")
        return {
            "id": run.id,
            "model": MODEL,
            "status": status,
            "input": run.inputs,
            "output": [url] if url else None,
            "error": error,
            "created_at": iso(run.created),
            "completed_at": iso(run.finished_at) if terminal else None,
        }

    async def _deliver_webhooks(self, run: Run) -> None:
        assert run.webhook is not None
        await run.settle(float("inf"))
        final = self.job(run, time.time())
        event = {"succeeded": "completed", "failed": "failed"}.get(run.status(time.time()))
        if event in run.events:
            for _ in range(2 if self.knobs.webhook_duplicate else 1):
                await self._send(run.webhook, final)
        if self.knobs.webhook_out_of_order:
            stale = self.job(run, run.starts)
            stale["status"] = self._status("processing")
            stale["result" if self.shape == "seed" else "output"] = None
            await self._send(run.webhook, stale)

    async def _send(self, url: str, body: dict[str, Any]) -> None:
        payload = orjson.dumps(body)
        http_status = None
        for attempt in range(3):
            headers = {"content-type": "application/json"}
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    answer = await client.post(url, content=payload, headers=headers)
                http_status = answer.status_code
            except httpx.HTTPError:
                http_status = None
            if http_status is not None and http_status < 300:
                break
            await asyncio.sleep(0.05 * (attempt + 1))
        self.deliveries.append((body["status"], http_status))


def detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)
