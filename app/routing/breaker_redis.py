"""The breaker state machine of ``breaker.py`` in Redis, one hash per provider, one Lua step each.

Every process shares the same breakers: one process's failures open it for all, and the
half-open probe slot is taken atomically, so exactly one submit across all replicas probes.
Times come from the caller's clock (wall time, as every replica shares it through NTP); the
hash fields are ``ou`` (open until), ``pu``/``pt`` (probe until / probe token), ``c``
(consecutive failures) and per window bucket ``b<n>`` (calls) and ``f<n>`` (failures).

When Redis cannot be reached each process falls back to its own in-process breakers, so a dead
upstream is still skipped; they are per process until Redis answers again. After a failure Redis
is left alone for ``REDIS_BACKOFF_S``, so an outage costs one timeout, not one per dispatch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.routing.breaker import (
    BUCKETS,
    PROBE_RECHECK_S,
    BreakerConfig,
    BreakerView,
    Clock,
    MemoryBreakers,
    State,
    Ticket,
    new_token,
)

log = structlog.get_logger(__name__)

KEY_TTL_MS = 24 * 3600 * 1000  # an idle provider's breaker is forgotten after a day
REDIS_BACKOFF_S = 2.0

# Sums the live buckets (pruning the stale ones); shared by both scripts.
_WINDOW = """
local function num(v) if v then return tonumber(v) end return 0 end
local function window(key, now, bucket_s, buckets, prune)
  local oldest = math.floor(now / bucket_s) - buckets + 1
  local fields = redis.call('HGETALL', key)
  local calls, fails = 0, 0
  for i = 1, #fields, 2 do
    local f = fields[i]
    local kind = string.sub(f, 1, 1)
    if kind == 'b' or kind == 'f' then
      if tonumber(string.sub(f, 2)) < oldest then
        if prune then redis.call('HDEL', key, f) end
      elseif kind == 'b' then calls = calls + tonumber(fields[i + 1])
      else fails = fails + tonumber(fields[i + 1]) end
    end
  end
  return calls, fails
end
"""

# ARGV: op, now, consecutive_failures, failure_ratio, min_calls, bucket_s, buckets, cooldown_s,
# probe_timeout_s, ok ("1"/"0"), token, ttl_ms
_STEP = (
    _WINDOW
    + """
local key, op, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local cooldown, probe_timeout, token, ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[11], ARGV[12]
local ou = num(redis.call('HGET', key, 'ou'))
if op == 'acquire' then
  if ou == 0 then return {1, '', '0'} end
  if now < ou then return {0, '', tostring(ou - now)} end
  local pu = num(redis.call('HGET', key, 'pu'))
  if pu > now then return {0, '', tostring(math.min(pu - now, tonumber(ARGV[13])))} end
  redis.call('HSET', key, 'pu', tostring(now + probe_timeout), 'pt', token)
  redis.call('PEXPIRE', key, ttl)
  return {1, token, '0'}
end
if op == 'release' then
  if token ~= '' and redis.call('HGET', key, 'pt') == token then
    redis.call('HDEL', key, 'pu', 'pt')
  end
  return {1, '', '0'}
end
-- op == 'record'
local ok = ARGV[10] == '1'
if ou ~= 0 then
  if token == '' or redis.call('HGET', key, 'pt') ~= token then return {0, '', '0'} end
  redis.call('DEL', key)
  if not ok then
    redis.call('HSET', key, 'ou', tostring(now + cooldown))
    redis.call('PEXPIRE', key, ttl)
  end
  return {1, '', '0'}
end
local calls, fails = window(key, now, tonumber(ARGV[6]), tonumber(ARGV[7]), true)
local bucket = string.format('%d', math.floor(now / tonumber(ARGV[6])))
calls = calls + 1
redis.call('HINCRBY', key, 'b' .. bucket, 1)
local c = 0
if ok then
  redis.call('HSET', key, 'c', 0)
else
  fails = fails + 1
  redis.call('HINCRBY', key, 'f' .. bucket, 1)
  c = redis.call('HINCRBY', key, 'c', 1)
end
local tripped = c >= tonumber(ARGV[3])
if calls >= tonumber(ARGV[5]) and fails / calls >= tonumber(ARGV[4]) then tripped = true end
if tripped then
  redis.call('DEL', key)
  redis.call('HSET', key, 'ou', tostring(now + cooldown))
end
redis.call('PEXPIRE', key, ttl)
return {1, '', '0'}
"""
)

# ARGV: now, bucket_s, buckets, probe_recheck_s. Per key: {state, retry_in, c, calls, fails}
# with state 0 closed, 1 open, 2 half-open (floats travel as strings: Lua numbers would be cut).
_VIEW = (
    _WINDOW
    + """
local now, bucket_s, buckets = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local ou = num(redis.call('HGET', key, 'ou'))
  if ou == 0 then
    local calls, fails = window(key, now, bucket_s, buckets, false)
    out[i] = {0, '0', num(redis.call('HGET', key, 'c')), calls, fails}
  elseif now < ou then
    out[i] = {1, tostring(ou - now), 0, 0, 0}
  else
    local pu = num(redis.call('HGET', key, 'pu'))
    local wait = 0
    if pu > now then wait = math.min(pu - now, tonumber(ARGV[4])) end
    out[i] = {2, tostring(wait), 0, 0, 0}
  end
end
return out
"""
)

_STATES = (State.CLOSED, State.OPEN, State.HALF_OPEN)


class RedisBreakers:
    def __init__(
        self, redis: Redis, prefix: str, config: BreakerConfig, clock: Clock = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.prefix = prefix + "breaker:"
        self.fallback = MemoryBreakers(config, clock)
        self._step = redis.register_script(_STEP)
        self._view = redis.register_script(_VIEW)
        self._skip_until = 0.0  # monotonic time before which Redis is not tried

    def _usable(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, op: str, exc: Exception) -> None:
        if self._usable():
            log.warning("breaker store unavailable", op=op, error=type(exc).__name__)
        self._skip_until = time.monotonic() + REDIS_BACKOFF_S

    async def _call(self, op: str, key: str, ok: bool = False, token: str = "") -> list[bytes]:
        c = self.config
        args: list[str | int] = [
            op,
            repr(self.clock()),
            c.consecutive_failures,
            repr(c.failure_ratio),
            c.min_calls,
            repr(c.bucket_s),
            BUCKETS,
            repr(c.cooldown_s),
            repr(c.probe_timeout_s),
            "1" if ok else "0",
            token,
            KEY_TTL_MS,
            repr(PROBE_RECHECK_S),
        ]
        result: list[bytes] = await self._step(keys=[self.prefix + key], args=args)
        return result

    async def acquire(self, key: str) -> Ticket:
        if self._usable():
            try:
                allowed, probe, retry_in = await self._call("acquire", key, token=new_token())
                return Ticket(bool(allowed), probe.decode() or None, float(retry_in))
            except (RedisError, OSError) as exc:
                self._failed("acquire", exc)
        return await self.fallback.acquire(key)

    async def record(self, key: str, ok: bool, probe: str | None = None) -> None:
        if self._usable():
            try:
                await self._call("record", key, ok=ok, token=probe or "")
                return
            except (RedisError, OSError) as exc:
                self._failed("record", exc)
        await self.fallback.record(key, ok, probe)

    async def release(self, key: str, probe: str) -> None:
        if self._usable():
            try:
                await self._call("release", key, token=probe)
                return
            except (RedisError, OSError) as exc:
                self._failed("release", exc)
        await self.fallback.release(key, probe)

    async def views(self, keys: Sequence[str]) -> list[BreakerView]:
        if not keys:
            return []
        if not self._usable():
            return await self.fallback.views(keys)
        args: list[str | int] = [
            repr(self.clock()),
            repr(self.config.bucket_s),
            BUCKETS,
            repr(PROBE_RECHECK_S),
        ]
        try:
            rows = await self._view(keys=[self.prefix + k for k in keys], args=args)
        except (RedisError, OSError) as exc:
            self._failed("views", exc)
            return await self.fallback.views(keys)
        return [
            BreakerView(_STATES[int(state)], float(wait), int(c), int(calls), int(fails))
            for state, wait, c, calls, fails in rows
        ]
