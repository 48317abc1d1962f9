"""Rate limits: the GCRA arithmetic, the Redis script against the same arithmetic, and the HTTP
contract (429 ``rate_limited`` with ``Retry-After`` and ``RateLimit``/``RateLimit-Policy``).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from app.auth.ratelimit import Limit, MemoryLimiter
from app.auth.ratelimit_redis import RedisLimiter, ResilientLimiter
from app.cache import connect_redis
from tests.auth.conftest import admin_headers
from tests.conftest import Backend, Gateway, start_gateway
from tests.helpers import body, new_key
from tests.procs import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_gcra_admits_the_burst_then_one_per_interval() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    limit = Limit(per_minute=30, burst=3)  # one every 2 s
    decisions = [limiter.take("k", limit) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].retry_after_s == pytest.approx(2.0)
    assert decisions[3].reset_s == pytest.approx(6.0)
    assert decisions[3].headers() == {
        "RateLimit-Policy": '"key";q=3;w=6',
        "RateLimit": '"key";r=0;t=6',
        "Retry-After": "2",
    }
    clock.now += 1.9
    assert not limiter.take("k", limit).allowed
    clock.now += 0.1
    again = limiter.take("k", limit)
    assert again.allowed and again.remaining == 0
    assert "Retry-After" not in again.headers()
    # Other keys are independent; an idle key's bucket refills completely.
    assert limiter.take("other", limit).remaining == 2
    clock.now += 60
    assert limiter.take("k", limit).remaining == 2


def test_memory_limiter_forgets_idle_keys_when_full() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock, max_keys=10)
    for i in range(10):
        limiter.take(f"k{i}", Limit(60, 1))
    clock.now += 5  # every bucket is full again
    limiter.take("new", Limit(60, 1))
    assert len(limiter._tats) == 1


async def test_redis_script_matches_the_in_process_arithmetic(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    prefix = f"igtest:{uuid.uuid4().hex[:8]}:"
    try:
        shared = RedisLimiter(redis, prefix)
        limit = Limit(per_minute=6, burst=4)  # one every 10 s
        decisions = [await shared.acquire("key_a", limit) for _ in range(6)]
        assert all(d is not None for d in decisions)
        assert [d.allowed for d in decisions if d] == [True] * 4 + [False] * 2
        assert [d.remaining for d in decisions if d] == [3, 2, 1, 0, 0, 0]
        refused = decisions[4]
        assert refused is not None
        # Exactly one interval after the first call, measured on Redis's clock.
        assert 8.0 < refused.retry_after_s <= 10.0
        assert 38.0 < refused.reset_s <= 40.0
        # The TAT lives under the configured prefix and expires when the bucket is full again.
        ttl_ms = await redis.pttl(f"{prefix}ratelimit:key_a")
        assert 38_000 < ttl_ms <= 40_002
        stored = await redis.get(f"{prefix}ratelimit:key_a")
        assert stored is not None and stored.isdigit() and len(stored) >= 16  # µs, not 1e+15
    finally:
        await redis.aclose()


async def test_redis_down_open_policy_admits_and_local_policy_limits() -> None:
    # Nothing listens on this port: every Redis call fails at once.
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        shared = RedisLimiter(redis, "igtest:")
        open_policy = ResilientLimiter(shared, policy="open")
        assert await open_policy.acquire("k", Limit(60, 1)) is None
        assert await open_policy.acquire("k", Limit(60, 1)) is None
        assert open_policy.degraded
        local = ResilientLimiter(shared, policy="local", replicas=3)
        limit = Limit(per_minute=60, burst=6)  # each of 3 replicas: 20/min, burst 2
        decisions = [await local.acquire("k", limit) for _ in range(3)]
        assert [d.allowed for d in decisions if d] == [True, True, False]
        assert decisions[2] is not None and decisions[2].limit == Limit(20, 2)
    finally:
        await redis.aclose()


def _limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    problem = response.json()
    assert problem["code"] == "rate_limited" and problem["status"] == 429
    assert response.headers["content-type"] == "application/problem+json"
    retry = int(response.headers["retry-after"])
    assert retry == max(1, math.ceil(problem["retry_after_s"]))
    assert response.headers["ratelimit"].startswith('"key";r=0;t=')


async def _limited_key(gateway: Gateway, per_minute: int, burst: int) -> Any:
    admin = await admin_headers(gateway)
    key = await new_key(gateway.runtime)
    key_id = (await gateway.runtime.keys.verify(key)).key_id  # type: ignore[union-attr]
    patched = await gateway.http.patch(
        f"/v1/admin/keys/{key_id}",
        json={"rate_limit_per_minute": per_minute, "rate_limit_burst": burst},
        headers=admin,
    )
    assert patched.status_code == 200
    return gateway.client(key)


async def test_a_keys_limit_answers_429_with_headers(gateway: Gateway) -> None:
    client = await _limited_key(gateway, per_minute=2, burst=2)  # one every 30 s
    first, second = await client.create(body()), await client.create(body())
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.headers["ratelimit-policy"] == '"key";q=2;w=60'
    assert first.headers["ratelimit"].startswith('"key";r=1;')
    assert second.headers["ratelimit"].startswith('"key";r=0;')
    # Reads are not counted (polling a job never uses up what the key may create)...
    for _ in range(5):
        read = await client.get(first.json()["job_id"])
        assert read.status_code == 200 and "ratelimit" not in read.headers
    # ...creates and cancels are.
    third = await client.cancel(first.json()["job_id"])
    _limited(third)
    assert 1 <= int(third.headers["retry-after"]) <= 30  # one interval after the first
    assert third.headers["ratelimit-policy"] == '"key";q=2;w=60'
    # A key without a limit of its own (and no server default) carries no RateLimit headers.
    free = await gateway.client(await new_key(gateway.runtime)).create(body())
    assert "ratelimit" not in free.headers


async def test_waiting_retry_after_is_enough(gateway: Gateway) -> None:
    client = await _limited_key(gateway, per_minute=30, burst=1)  # one every 2 s
    for _ in range(10):  # until refused (normally the second request)
        refused = await client.create(body())
        if refused.status_code == 429:
            break
        assert refused.status_code == 202
    _limited(refused)
    await asyncio.sleep(int(refused.headers["retry-after"]))
    admitted = await client.create(body())
    assert admitted.status_code == 202, admitted.text


@pytest.fixture
async def limited_by_default(sqlite_backend: Backend, tmp_path: Path) -> Any:
    async for gw in start_gateway(
        sqlite_backend, tmp_path, run_worker=False, rate_limit_per_minute=2, rate_limit_burst=1
    ):
        yield gw


async def test_server_default_limit_and_per_key_overrides(limited_by_default: Gateway) -> None:
    gateway = limited_by_default
    plain = gateway.client(await new_key(gateway.runtime))
    assert (await plain.create(body())).status_code == 202
    refused = await plain.create(body())
    _limited(refused)
    assert refused.headers["ratelimit-policy"] == '"key";q=1;w=30'
    assert 1 <= int(refused.headers["retry-after"]) <= 30

    admin = await admin_headers(gateway)  # itself exempt: rate_limit_per_minute 0
    exempt_key = await new_key(gateway.runtime)
    key_id = (await gateway.runtime.keys.verify(exempt_key)).key_id  # type: ignore[union-attr]
    patched = await gateway.http.patch(
        f"/v1/admin/keys/{key_id}", json={"rate_limit_per_minute": 0}, headers=admin
    )
    assert patched.status_code == 200
    exempt = gateway.client(exempt_key)
    statuses = [(await exempt.create(body())).status_code for _ in range(5)]
    assert statuses == [202] * 5
    roomy = await gateway.http.patch(
        f"/v1/admin/keys/{key_id}",
        json={"rate_limit_per_minute": 6, "rate_limit_burst": 3},
        headers=admin,
    )
    assert roomy.status_code == 200
    statuses = [(await exempt.create(body())).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
