"""Shared pieces of the upstream emulators: a loopback server, knobs, the paid-submission ledger.

Each emulator is a small Starlette/FastAPI ASGI app faithful to one upstream's wire protocol
(`shared/spec/providers.md`). It runs under a real uvicorn on 127.0.0.1 in a background thread, so
tests that block (official SDKs are synchronous) cannot starve it.
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image, ImageDraw


@dataclass
class Knobs:
    """Behaviour switches shared by every emulator. Times are seconds, already scaled."""

    latency: tuple[float, float] = (0.05, 0.15)  # running time range, uniform
    queue_time: tuple[float, float] = (0.0, 0.0)  # time spent queued before running
    failure_rate: float = 0.0  # job runs and fails
    moderation_rate: float = 0.0  # job runs and is flagged NSFW / moderated
    burst_429: int = 0  # the next N calls (any route) answer 429
    burst_5xx: int = 0  # the next N calls (any route) answer 503
    submit_5xx: int = 0  # the next N submits answer 500/503 (not accepted, not billed)
    retry_after: float = 1.0  # seconds in Retry-After on 429s
    hang_submit_after_accept: float = 0.0  # accept (ledger!), then hold the answer this long
    hang_polls: float = 0.0  # hold every status answer this long
    malformed: int = 0  # the next N status answers are not JSON
    unknown_status: int = 0  # the next N status answers carry a status we do not document
    url_ttl: float = 3600.0  # output URLs stop working after this long
    serve_outputs_once: bool = False  # an output URL answers once, then 404
    webhooks: bool = True  # send webhooks when the client asked for one
    webhook_signed: bool = True  # (Replicate) sign with the secret
    webhook_duplicate: bool = False  # send every webhook twice
    webhook_out_of_order: bool = False  # send a stale "processing" after the terminal one
    seed: int | None = None  # RNG seed for repeatable runs


@dataclass
class LedgerEntry:
    upstream_id: str
    body: dict[str, Any]
    at: float


@dataclass
class Ledger:
    """Every paid submission the emulator accepted: "what went in must come out"."""

    entries: list[LedgerEntry] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, upstream_id: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.entries.append(LedgerEntry(upstream_id, body, time.time()))

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self) -> list[str]:
        with self.lock:
            return [e.upstream_id for e in self.entries]


@dataclass
class Calls:
    """Every request the emulator saw, for tests that count polls or cancels."""

    log: list[tuple[str, str, float]] = field(default_factory=list)  # (method, path, at)

    def add(self, method: str, path: str) -> None:
        self.log.append((method, path, time.time()))

    def count(self, method: str, contains: str = "") -> int:
        return sum(1 for m, p, _ in self.log if m == method and contains in p)


def take(knobs: Knobs, name: str) -> bool:
    """Consume one unit of a countdown knob (``burst_429`` etc.); True when it fired."""
    left = getattr(knobs, name)
    if left > 0:
        setattr(knobs, name, left - 1)
        return True
    return False


def make_rng(knobs: Knobs) -> random.Random:
    return random.Random(knobs.seed)


def render_image(width: int, height: int, text: str, fmt: str = "png") -> tuple[bytes, str]:
    """Real image bytes in the asked format; returns (bytes, content type)."""
    image = Image.new("RGB", (width, height), (40, 90, 160))
    ImageDraw.Draw(image).text((16, 16), text[:80], fill=(255, 255, 255))
    buffer = io.BytesIO()
    pil_format = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt.lower()]
    image.save(buffer, format=pil_format, quality=80)
    content_type = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}[pil_format]
    return buffer.getvalue(), content_type


@dataclass
class StoredFile:
    data: bytes
    content_type: str
    expires_at: float
    served: int = 0


class FileHost:
    """Output files served by the emulator at ``/files/{name}``, expiring like the real CDNs."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.corrupt = False  # serve truncated bytes (a broken CDN)

    def put(self, name: str, data: bytes, content_type: str, ttl: float) -> None:
        self.files[name] = StoredFile(data, content_type, time.time() + ttl)

    def get(self, name: str, *, once: bool) -> StoredFile | None:
        stored = self.files.get(name)
        if stored is None or time.time() > stored.expires_at or (once and stored.served):
            return None
        stored.served += 1
        if self.corrupt:
            return StoredFile(stored.data[:64], stored.content_type, stored.expires_at)
        return stored


class LoopbackServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (port chosen by the OS) in a thread."""

    def __init__(self, app: Callable[..., Any], **config: Any) -> None:
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **config
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> str:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("emulator server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if self.config.ssl_certfile else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serve(app: Callable[..., Any], **config: Any) -> Iterator[str]:
    """``with serve(app) as base_url: ...``"""
    server = LoopbackServer(app, **config)
    try:
        yield server.start()
    finally:
        server.stop()
