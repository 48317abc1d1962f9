"""Wake-ups across processes: Redis pub/sub signals say whether they are live, and a waiter that
cannot trust them (Redis down, or not yet subscribed) re-reads on a short timer instead of
sleeping until its keep-alive."""

from __future__ import annotations

import asyncio
import time
import uuid

from app.cache import RedisSignals, connect_redis
from app.jobs.events import OFFLINE_RECHECK_S, JobWatch
from tests.procs import RedisServer


async def _signals(url: str, prefix: str) -> RedisSignals:
    signals = RedisSignals(connect_redis(url), prefix)
    signals.start()
    return signals


async def _until(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_notify_in_one_process_wakes_a_waiter_in_another(redis_url: str) -> None:
    prefix = f"igsig:{uuid.uuid4().hex[:8]}:"
    sender, receiver = await _signals(redis_url, prefix), await _signals(redis_url, prefix)
    try:
        assert await sender.ready(5.0) and await receiver.ready(5.0)
        async with JobWatch(receiver, "job:img_1") as watch:
            await sender.notify("job:img_1")
            assert await watch.wait(5.0) is True
        async with JobWatch(receiver, "job:img_2") as watch:
            await sender.notify("job:img_other")
            assert await watch.wait(0.3) is False  # another job's signal does not wake it
    finally:
        for signals in (sender, receiver):
            await signals.close()
            await signals.redis.aclose()


async def test_signals_are_not_live_while_redis_is_down_and_waiters_recheck(
    private_redis: RedisServer,
) -> None:
    signals = await _signals(private_redis.url, "igsig:")
    try:
        assert await signals.ready(5.0)
        private_redis.stop()
        assert await _until(lambda: not signals.live, 5.0)
        async with JobWatch(signals, "job:img_1") as watch:
            started = time.monotonic()
            assert await watch.wait(3600) is True  # "read again", not an hour's sleep
            assert time.monotonic() - started < OFFLINE_RECHECK_S + 2
        private_redis.start()
        assert await signals.ready(10.0), "the subscription comes back without a restart"
        async with JobWatch(signals, "job:img_1") as watch:
            assert await watch.wait(0.3) is False  # live again: it waits for a real signal
    finally:
        await signals.close()
        await signals.redis.aclose()
