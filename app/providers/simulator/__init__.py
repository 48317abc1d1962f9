"""The built-in ``simulator`` provider: placeholder images drawn locally, no network, no money.

It behaves like an asynchronous upstream (queued, running, then succeeded or failed after a
configurable latency) but keeps no state: latency and outcome are drawn at submit time and
carried in the attempt's handle, so any worker process can poll a job another one submitted.
Each submission appends one line to an optional ledger file, for tests that count submissions.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import time
from pathlib import Path

import orjson
from PIL import Image, ImageDraw, ImageFont
from ulid import ULID

from app.config import SimulatorSettings
from app.providers.base import (
    Capabilities,
    ErrorCode,
    PollTiming,
    Submitted,
    UpstreamOutput,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
)

CONTENT_TYPES = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}
_PIL_FORMATS = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}


class SimulatorProvider:
    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self._rng = random.Random()

    @property
    def name(self) -> str:
        return "simulator"

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(
            max_input_images=4,
            max_loras=3,
            min_side=256,
            max_side=2048,
            max_outputs=4,
            cancel=True,
        )

    def poll_timing(self) -> PollTiming:
        latency = self.settings.latency_s
        return PollTiming(
            first_poll_after=max(0.02, latency * 0.8),
            backoff=1.5,
            cap=max(0.05, latency / 5),
            min_interval=0.02,
        )

    async def submit(self, request: UpstreamRequest) -> Submitted:
        spread = self.settings.latency_s * self.settings.latency_jitter
        latency = max(0.0, self.settings.latency_s + self._rng.uniform(-spread, spread))
        fails = self._rng.random() < self.settings.failure_rate
        upstream_id = f"sim_{ULID()}"
        if self.settings.ledger_path is not None:
            await asyncio.to_thread(_append_ledger, self.settings.ledger_path, upstream_id, request)
        handle = {"submitted_at": f"{time.time():.6f}", "latency": f"{latency:.6f}"}
        if fails:
            handle["fails"] = "1"
        return Submitted(upstream_id=upstream_id, handle=handle)

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        elapsed = time.time() - float(ref.handle["submitted_at"])
        latency = float(ref.handle["latency"])
        if elapsed < latency * 0.2:
            return UpstreamState(UpstreamStatus.QUEUED, "queued")
        if elapsed < latency:
            return UpstreamState(UpstreamStatus.RUNNING, "running")
        if ref.handle.get("fails"):
            return UpstreamState(
                UpstreamStatus.FAILED,
                "failed",
                error_code=ErrorCode.UPSTREAM_ERROR,
                error_message="simulated upstream failure",
            )
        request = ref.request
        outputs = tuple(
            UpstreamOutput(
                url=f"simulator://{ref.upstream_id}/{index}",
                content_type=CONTENT_TYPES[request.output_format],
                width=request.width,
                height=request.height,
            )
            for index in range(request.num_outputs)
        )
        return UpstreamState(
            UpstreamStatus.SUCCEEDED, "succeeded", outputs=outputs, seed=_seed(ref)
        )

    async def cancel(self, ref: UpstreamRef) -> None:
        """Nothing runs anywhere: cancelling is always accepted."""

    async def fetch_output(self, ref: UpstreamRef, output: UpstreamOutput) -> bytes:
        index = int(output.url.rsplit("/", 1)[-1])
        return await asyncio.to_thread(render_placeholder, ref.request, _seed(ref), index)


def _seed(ref: UpstreamRef) -> int:
    if ref.request.seed is not None:
        return ref.request.seed
    digest = hashlib.sha256(ref.upstream_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2_147_483_648


def render_placeholder(request: UpstreamRequest, seed: int, index: int = 0) -> bytes:
    """A gradient in colours derived from the seed, with the prompt, size and seed written on."""
    rng = random.Random(seed * 31 + index)
    width, height = request.width, request.height
    top = tuple(rng.randrange(40, 200) for _ in range(3))
    bottom = tuple(rng.randrange(20, 120) for _ in range(3))
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), gradient
    )
    draw = ImageDraw.Draw(image)
    size = max(14, width // 40)
    font = ImageFont.load_default(size=size)
    lines = _wrap(request.prompt, max(10, width // (size // 2 + 1)))[:8]
    lines += ["", f"{width}x{height}  seed {seed}  #{index + 1}", "imagegate simulator"]
    y = height // 8
    for line in lines:
        draw.text((width // 16, y), line, fill=(255, 255, 255), font=font)
        y += int(size * 1.4)
    buffer = io.BytesIO()
    fmt = _PIL_FORMATS[request.output_format]
    if fmt == "PNG":
        image.save(buffer, format=fmt, optimize=False, compress_level=1)
    else:
        image.save(buffer, format=fmt, quality=max(1, request.output_quality))
    return buffer.getvalue()


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines


def _append_ledger(path: Path, upstream_id: str, request: UpstreamRequest) -> None:
    line = orjson.dumps({"upstream_id": upstream_id, "job_id": request.job_id, "at": time.time()})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line + b"\n")
    finally:
        os.close(fd)
