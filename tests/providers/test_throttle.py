"""Per-provider pacing: calls wait for a token; optional powers pass through the wrapper."""

from __future__ import annotations

import asyncio
import time

from app.config import SimulatorSettings
from app.providers.base import Cancellable, OutputSource, UpstreamRequest, WebhookReceiver
from app.providers.simulator import SimulatorProvider
from app.providers.throttle import Throttled, TokenBucket


async def test_bucket_paces_calls_after_the_burst() -> None:
    bucket = TokenBucket(rate=20, burst=2)
    started = time.monotonic()
    stamps = []
    for _ in range(6):
        await bucket.acquire()
        stamps.append(time.monotonic() - started)
    # Two at once (the burst), then the n-th call no earlier than (n - 2) / 20 s.
    for n, at in enumerate(stamps, start=1):
        assert at >= max(0, n - 2) / 20 - 0.002, stamps


async def test_concurrent_callers_share_the_rate() -> None:
    bucket = TokenBucket(rate=50, burst=1)
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(11)))
    assert time.monotonic() - started >= 10 / 50 - 0.01


async def test_wrapper_keeps_the_providers_optional_powers() -> None:
    wrapped = Throttled(SimulatorProvider(SimulatorSettings(latency_s=0)), rate=100)
    assert wrapped.name == "simulator"
    assert isinstance(wrapped, Cancellable)
    assert isinstance(wrapped, OutputSource)
    assert not isinstance(wrapped, WebhookReceiver)
    request = UpstreamRequest(job_id="img_x", model="m", prompt="p", width=256, height=256)
    submitted = await wrapped.submit(request)
    assert submitted.upstream_id.startswith("sim_")
