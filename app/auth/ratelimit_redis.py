"""GCRA across replicas: one Lua script in Redis, on Redis's own clock, and the outage policy.

The script reads the key's TAT, decides and writes the new TAT in one atomic step, with the time
taken from ``redis.call('TIME')`` so that API replicas with skewed clocks still share one limit.
TATs are integer microseconds; the key expires when its bucket is full again, so idle keys cost
no memory.

When Redis is unreachable (``rate_limit_redis_down``):

- ``local`` (default): each API process enforces the limit on its own with the in-process GCRA,
  with the key's rate and burst divided by ``rate_limit_replicas`` (at least 1 each), so that N
  replicas together admit about what the shared limit would. A warning is logged once per outage.
- ``open``: requests are not limited while Redis is down (a warning is logged once per outage).

After a failure Redis is left alone for ``_RETRY_AFTER_S`` so an outage costs one timeout, not
one per request; the first success afterwards logs the recovery. No restart is needed.
"""

from __future__ import annotations

import time
from typing import Literal

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.auth.ratelimit import Decision, Limit, MemoryLimiter, RateLimiter

log = structlog.get_logger(__name__)

_RETRY_AFTER_S = 1.0

# KEYS[1]: the key's TAT (µs, Redis clock). ARGV[1]: interval (µs). ARGV[2]: burst.
# Returns {allowed, remaining, retry_after_us, reset_us}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - capacity
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, math.floor((now + capacity - new_tat) / interval), 0, new_tat - now}
"""


class RedisLimiter:
    """The shared limiter: exact across any number of API processes."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.prefix = prefix + "ratelimit:"
        self._script = redis.register_script(GCRA_LUA)

    async def acquire(self, key: str, limit: Limit) -> Decision | None:
        interval_us = max(1, round(60_000_000 / limit.per_minute))
        allowed, remaining, retry_us, reset_us = await self._script(
            keys=[self.prefix + key], args=[interval_us, limit.burst]
        )
        return Decision(
            bool(allowed), limit, int(remaining), int(retry_us) / 1e6, int(reset_us) / 1e6
        )


class ResilientLimiter:
    """Redis first; while Redis is unreachable, the documented fallback policy."""

    def __init__(
        self,
        shared: RedisLimiter,
        *,
        policy: Literal["local", "open"] = "local",
        replicas: int = 1,
        local: MemoryLimiter | None = None,
    ) -> None:
        self.shared = shared
        self.policy = policy
        self.replicas = replicas
        self.local = local or MemoryLimiter()
        self._skip_until = 0.0
        self._degraded = False

    @property
    def degraded(self) -> bool:
        return self._degraded

    async def acquire(self, key: str, limit: Limit) -> Decision | None:
        if time.monotonic() >= self._skip_until:
            try:
                decision = await self.shared.acquire(key, limit)
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                if self._degraded:
                    self._degraded = False
                    log.info("rate limiter: redis is back, limits are shared again")
                return decision
        if self.policy == "open":
            return None
        return self.local.take(key, limit.scaled_down(self.replicas))

    def _failed(self, exc: Exception) -> None:
        self._skip_until = time.monotonic() + _RETRY_AFTER_S
        if not self._degraded:
            self._degraded = True
            log.warning(
                "rate limiter: redis unavailable",
                error=type(exc).__name__,
                policy=self.policy,
                replicas=self.replicas,
            )


def build_limiter(
    redis: Redis | None, prefix: str, policy: Literal["local", "open"], replicas: int
) -> RateLimiter:
    if redis is None:
        return MemoryLimiter()
    return ResilientLimiter(RedisLimiter(redis, prefix), policy=policy, replicas=replicas)
