"""Per-provider request pacing, so polling thousands of jobs never exceeds an upstream's limit.

A token bucket per provider and process: ``requests_per_second`` tokens a second, bursts up to
one second's worth. Calls wait for a token instead of failing. With several worker processes,
configure the per-process share (the upstream's limit divided by the number of workers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from app.providers.base import (
    Capabilities,
    PollTiming,
    Submitted,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
)

# Published limits (providers.md): Replicate allows 3,000 non-create calls a minute.
DEFAULT_RPS: Mapping[str, float] = {"replicate": 50.0}


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class Throttled:
    """Wraps a provider; every upstream call waits for a token. Optional powers pass through."""

    def __init__(self, inner: Any, rate: float) -> None:
        self._inner = inner
        self._bucket = TokenBucket(rate)

    @property
    def name(self) -> str:
        return str(self._inner.name)

    def capabilities(self, model: str) -> Capabilities:
        caps: Capabilities = self._inner.capabilities(model)
        return caps

    def poll_timing(self) -> PollTiming:
        timing: PollTiming = self._inner.poll_timing()
        return timing

    async def submit(self, request: UpstreamRequest) -> Submitted:
        await self._bucket.acquire()
        submitted: Submitted = await self._inner.submit(request)
        return submitted

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        await self._bucket.acquire()
        state: UpstreamState = await self._inner.poll(ref)
        return state

    def __getattr__(self, name: str) -> Any:
        # cancel, parse_webhook, fetch_output: present exactly when the inner provider has them,
        # so isinstance checks against the optional protocols keep working.
        attr = getattr(self._inner, name)
        if name == "cancel":

            async def cancel(ref: UpstreamRef) -> None:
                await self._bucket.acquire()
                await attr(ref)

            return cancel
        return attr
