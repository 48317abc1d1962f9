"""Cache and signals: Redis when configured, an in-process equivalent otherwise.

- ``Cache``: bytes by key with a TTL (job JSON for fast ``GET``s).
- ``Signals``: "something happened on channel X" wake-ups (a new job for the workers, a job's
  transition for a waiting request). A signal is a hint, never data: whoever wakes re-reads the
  job store, so a lost signal costs latency, not correctness.

Redis policy: Redis is an accelerator, not a source of truth. When it is unreachable, reads miss,
writes are dropped, signals fall back to timers, and after a failure Redis is left alone for a
short back-off instead of making every request wait for a timeout. Recovery needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

log = structlog.get_logger(__name__)


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def set_versioned(self, key: str, version: int, value: bytes, ttl: int) -> None:
        """Store ``value`` unless the cache already holds a newer ``version`` of ``key``."""

    async def delete(self, key: str) -> None: ...
    async def ping(self) -> bool: ...


class Signals(Protocol):
    @property
    def live(self) -> bool:
        """Whether a notify from any process reaches this process's waiters right now; when
        not, waiters re-read on a short timer instead of trusting the wake-ups."""
        ...

    async def notify(self, channel: str) -> None: ...
    async def wait(self, channel: str, timeout: float) -> bool: ...


class MemoryCache:
    """A bounded LRU with TTLs for one process."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._max = max_entries

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._data[key] = (time.monotonic() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            old, _ = self._data.popitem(last=False)
            self._versions.pop(old, None)

    async def set_versioned(self, key: str, version: int, value: bytes, ttl: int) -> None:
        if key in self._data and self._versions.get(key, -1) > version:
            return
        self._versions[key] = version
        await self.set(key, value, ttl)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._versions.pop(key, None)

    async def ping(self) -> bool:
        return True


class LocalSignals:
    """Per-channel events. A signal sent while nobody waits is kept for the next waiter."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}

    @property
    def live(self) -> bool:
        return True

    def fire(self, channel: str) -> None:
        event = self._events.get(channel)
        if event is not None:
            event.set()
        elif channel == "wake":  # only the workers' channel keeps an unheard signal
            self._events[channel] = event = asyncio.Event()
            event.set()

    async def notify(self, channel: str) -> None:
        self.fire(channel)

    async def wait(self, channel: str, timeout: float) -> bool:
        event = self._events.setdefault(channel, asyncio.Event())
        self._waiting[channel] = self._waiting.get(channel, 0) + 1
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            event.clear()
            left = self._waiting[channel] - 1
            if left:
                self._waiting[channel] = left
            else:
                del self._waiting[channel]
                if channel != "wake":
                    self._events.pop(channel, None)


class _Backoff:
    """Skip Redis for a moment after it failed, so an outage costs one timeout, not thousands."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.until = 0.0

    def open(self) -> bool:
        return time.monotonic() >= self.until

    def failed(self, what: str, exc: Exception) -> None:
        if self.open():
            log.warning("redis unavailable", op=what, error=type(exc).__name__)
        self.until = time.monotonic() + self.seconds


# Keep the newer of two writers: versions live beside values under "<key>:v".
_SET_VERSIONED = """
local current = tonumber(redis.call('GET', KEYS[2]) or '-1')
if current > tonumber(ARGV[1]) and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
"""


class RedisCache:
    def __init__(self, redis: Redis, prefix: str = "imagegate:") -> None:
        self.redis = redis
        self.prefix = prefix
        self.backoff = _Backoff()
        self._set_versioned = redis.register_script(_SET_VERSIONED)

    async def set_versioned(self, key: str, version: int, value: bytes, ttl: int) -> None:
        if not self.backoff.open():
            return
        full = self.prefix + key
        try:
            await self._set_versioned(keys=[full, full + ":v"], args=[version, value, ttl])
        except (RedisError, OSError) as exc:
            self.backoff.failed("set", exc)

    async def get(self, key: str) -> bytes | None:
        if not self.backoff.open():
            return None
        try:
            value = await self.redis.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            self.backoff.failed("get", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        if not self.backoff.open():
            return
        try:
            await self.redis.set(self.prefix + key, value, ex=ttl)
        except (RedisError, OSError) as exc:
            self.backoff.failed("set", exc)

    async def delete(self, key: str) -> None:
        # A delete that cannot reach Redis must not leave a stale entry being served for long:
        # job entries are also versioned by their TTL (see jobs.cache), so dropping is safe.
        try:
            await self.redis.delete(self.prefix + key)
        except (RedisError, OSError) as exc:
            self.backoff.failed("delete", exc)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False


class RedisSignals:
    """Signals over Redis pub/sub, delivered to this process's ``LocalSignals`` waiters."""

    def __init__(self, redis: Redis, prefix: str = "imagegate:") -> None:
        self.redis = redis
        self.prefix = prefix + "sig:"
        self.local = LocalSignals()
        self.backoff = _Backoff()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def live(self) -> bool:
        return self._subscribed.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="redis-signals")

    async def ready(self, timeout: float) -> bool:
        """Wait until the subscription is confirmed (startup), at most ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()
        return self.live

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def notify(self, channel: str) -> None:
        self.local.fire(channel)
        if not self.backoff.open():
            return
        try:
            await self.redis.publish(self.prefix + channel, b"1")
        except (RedisError, OSError) as exc:
            self.backoff.failed("publish", exc)

    async def wait(self, channel: str, timeout: float) -> bool:
        return await self.local.wait(channel, timeout)

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.psubscribe(self.prefix + "*")
                    delay = 0.2
                    async for message in pubsub.listen():
                        if message.get("type") == "psubscribe":
                            self._subscribed.set()
                            continue
                        if message.get("type") != "pmessage":
                            continue
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        self.local.fire(channel.removeprefix(self.prefix))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("redis signals disconnected", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def connect_redis(url: str) -> Redis:
    """One client per process. A command is retried once, at once, and only after a connection
    error (a pooled connection that died with a Redis restart); never after a timeout, since a
    timed-out command may have run (a rate-limit script run twice spends two tokens). Callers
    treat any remaining failure as Redis being down."""
    return Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        max_connections=200,
    )


async def store_and_notify(
    cache: Cache,
    signals: Signals,
    key: str,
    version: int,
    value: bytes,
    ttl: int,
    channels: Sequence[str],
) -> None:
    """``cache.set_versioned`` then ``signals.notify`` on each channel, in that order.

    When both live on one Redis client this is one pipelined round trip instead of one per
    command; each part keeps its own failure policy (back-off, dropped writes, local waiters
    woken first). A script Redis has forgotten (after a restart or ``SCRIPT FLUSH``) is
    loaded again by the plain ``set_versioned``.
    """
    if not (
        isinstance(cache, RedisCache)
        and isinstance(signals, RedisSignals)
        and cache.redis is signals.redis
        and cache.backoff.open()
        and signals.backoff.open()
    ):
        await cache.set_versioned(key, version, value, ttl)
        for channel in channels:
            await signals.notify(channel)
        return
    full = cache.prefix + key
    pipe = cache.redis.pipeline(transaction=False)
    pipe.evalsha(cache._set_versioned.sha, 2, full, full + ":v", version, value, ttl)
    for channel in channels:
        pipe.publish(signals.prefix + channel, b"1")
    try:
        stored, *_ = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError) as exc:
        cache.backoff.failed("set", exc)
        signals.backoff.failed("publish", exc)
    else:
        if isinstance(stored, NoScriptError):
            await cache.set_versioned(key, version, value, ttl)
        elif isinstance(stored, (RedisError, OSError)):
            cache.backoff.failed("set", stored)
    # Local waiters last, as ``notify`` after ``set_versioned`` would: they re-read the cache.
    for channel in channels:
        signals.local.fire(channel)
