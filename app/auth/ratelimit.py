"""Per-key rate limits by GCRA (the generic cell rate algorithm), and the headers that report them.

A limit is ``per_minute`` requests with a ``burst``: from idle a key may send ``burst`` requests at
once, then one every ``60 / per_minute`` seconds. GCRA keeps one number per key, the theoretical
arrival time (TAT) of the next request; a request is admitted when admitting it would not push the
TAT more than ``burst`` intervals past now. The same arithmetic runs here (one process) and in a
Redis Lua script (all replicas, Redis's clock; see ``ratelimit_redis``).

Headers follow draft-ietf-httpapi-ratelimit-headers-10: ``RateLimit-Policy: "key";q=<burst>;
w=<seconds for a full burst to drain>`` (exactly the GCRA's rate and burst) and ``RateLimit:
"key";r=<remaining now>;t=<seconds until the full burst is available again>``; a 429 also carries
``Retry-After`` (whole seconds, rounded up, until the next request will be admitted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.errors import ApiError

POLICY_NAME = "key"


class RateLimited(ApiError):
    status, code, title = 429, "rate_limited", "Too many requests"


@dataclass(frozen=True, slots=True)
class Limit:
    per_minute: int
    burst: int

    @property
    def interval_s(self) -> float:
        return 60.0 / self.per_minute

    def scaled_down(self, replicas: int) -> Limit:
        """This process's share when ``replicas`` processes enforce the limit without Redis."""
        return Limit(max(1, self.per_minute // replicas), max(1, self.burst // replicas))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: Limit
    remaining: int
    retry_after_s: float  # 0 when allowed; else seconds until the next request is admitted
    reset_s: float  # seconds until the whole burst is available again

    def headers(self) -> dict[str, str]:
        window = max(1, math.ceil(self.limit.burst * self.limit.interval_s))
        reset = max(0, math.ceil(self.reset_s))
        headers = {
            "RateLimit-Policy": f'"{POLICY_NAME}";q={self.limit.burst};w={window}',
            "RateLimit": f'"{POLICY_NAME}";r={self.remaining};t={reset}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class RateLimiter(Protocol):
    async def acquire(self, key: str, limit: Limit) -> Decision | None:
        """Count one request of ``key``; ``None`` means "not limited right now" (fail-open)."""


def gcra(tat: float | None, now: float, limit: Limit) -> tuple[float | None, Decision]:
    """One GCRA step: the key's new TAT (``None`` when refused, TAT unchanged) and the decision."""
    interval = limit.interval_s
    capacity = interval * limit.burst
    current = now if tat is None or tat < now else tat
    new_tat = current + interval
    allow_at = new_tat - capacity
    if allow_at > now:
        return None, Decision(False, limit, 0, allow_at - now, current - now)
    remaining = int((now + capacity - new_tat) / interval + 1e-9)
    return new_tat, Decision(True, limit, remaining, 0.0, new_tat - now)


class MemoryLimiter:
    """GCRA for one process (embedded mode, and the fallback while Redis is unreachable)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._tats: dict[str, float] = {}

    async def acquire(self, key: str, limit: Limit) -> Decision | None:
        return self.take(key, limit)

    def take(self, key: str, limit: Limit) -> Decision:
        now = self.clock()
        new_tat, decision = gcra(self._tats.get(key), now, limit)
        if new_tat is not None:
            if len(self._tats) >= self.max_keys:
                self._forget_idle(now)
            self._tats[key] = new_tat
        return decision

    def _forget_idle(self, now: float) -> None:
        # A TAT in the past is the same as no TAT at all: the key's bucket is full.
        self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        if len(self._tats) >= self.max_keys:
            self._tats.clear()  # under a flood of distinct keys, forgetting errs on admitting
