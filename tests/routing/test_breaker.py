"""The circuit breaker, on both stores (in-process and Redis), with a controlled clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.routing.breaker import BreakerConfig, BreakerStore, MemoryBreakers, State
from app.routing.breaker_redis import RedisBreakers
from app.routing.health import breaker_keys

CONFIG = BreakerConfig(
    consecutive_failures=3,
    failure_ratio=0.5,
    min_calls=6,
    window_s=10.0,
    cooldown_s=5.0,
    probe_timeout_s=4.0,
)


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Rig:
    store: BreakerStore
    clock: Clock
    key: str

    async def state(self) -> State:
        [view] = await self.store.views([self.key])
        return view.state

    async def fail(self, times: int = 1) -> None:
        for _ in range(times):
            await self.store.record(self.key, False)


@pytest.fixture(params=["memory", "redis"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    clock = Clock()
    key = f"p{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        yield Rig(MemoryBreakers(CONFIG, clock), clock, key)
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield Rig(
            RedisBreakers(redis, f"igtest:{uuid.uuid4().hex[:8]}:", CONFIG, clock), clock, key
        )
    finally:
        await redis.aclose()


async def test_consecutive_failures_open_it_and_a_success_resets_the_count(rig: Rig) -> None:
    await rig.fail(2)
    await rig.store.record(rig.key, True)
    await rig.fail(2)
    assert await rig.state() is State.CLOSED
    assert (await rig.store.acquire(rig.key)).allowed
    await rig.fail()
    assert await rig.state() is State.OPEN
    ticket = await rig.store.acquire(rig.key)
    assert not ticket.allowed
    assert ticket.retry_in == pytest.approx(CONFIG.cooldown_s)


async def test_failure_ratio_over_the_window_opens_it(rig: Rig) -> None:
    for ok in (False, True, False, True, False):
        await rig.store.record(rig.key, ok)
    [view] = await rig.store.views([rig.key])
    assert (view.state, view.window_calls, view.window_failures) == (State.CLOSED, 5, 3)
    await rig.store.record(rig.key, True)  # 6 calls, 3 failures: ratio 0.5 reached
    assert await rig.state() is State.OPEN


async def test_the_window_slides(rig: Rig) -> None:
    for ok in (False, True, False, True, False):
        await rig.store.record(rig.key, ok)
    rig.clock.advance(CONFIG.window_s + CONFIG.window_s / 10)
    await rig.store.record(rig.key, True)
    [view] = await rig.store.views([rig.key])
    assert (view.state, view.window_calls, view.window_failures) == (State.CLOSED, 1, 0)


async def test_after_the_cool_down_exactly_one_probe_and_its_success_closes(rig: Rig) -> None:
    await rig.fail(3)
    rig.clock.advance(CONFIG.cooldown_s - 0.01)
    assert not (await rig.store.acquire(rig.key)).allowed
    rig.clock.advance(0.02)
    assert await rig.state() is State.HALF_OPEN
    probe = await rig.store.acquire(rig.key)
    assert probe.allowed and probe.probe
    for _ in range(3):
        refused = await rig.store.acquire(rig.key)
        assert not refused.allowed
        assert 0 < refused.retry_in <= 1.0
    await rig.store.record(rig.key, True, probe.probe)
    assert await rig.state() is State.CLOSED
    admitted = await rig.store.acquire(rig.key)
    assert admitted.allowed and admitted.probe is None


async def test_a_failed_probe_reopens_for_a_new_cool_down(rig: Rig) -> None:
    await rig.fail(3)
    rig.clock.advance(CONFIG.cooldown_s)
    probe = await rig.store.acquire(rig.key)
    assert probe.probe
    rig.clock.advance(1.0)
    await rig.store.record(rig.key, False, probe.probe)
    assert await rig.state() is State.OPEN
    ticket = await rig.store.acquire(rig.key)
    assert not ticket.allowed and ticket.retry_in == pytest.approx(CONFIG.cooldown_s)


async def test_outcomes_other_than_the_probes_do_not_move_an_open_breaker(rig: Rig) -> None:
    await rig.fail(3)
    await rig.store.record(rig.key, True)  # a job submitted before it opened finishes well
    assert await rig.state() is State.OPEN
    rig.clock.advance(CONFIG.cooldown_s)
    probe = await rig.store.acquire(rig.key)
    await rig.store.record(rig.key, True)  # not the probe: still half-open
    await rig.store.record(rig.key, False, "someone-elses-token")
    assert await rig.state() is State.HALF_OPEN
    await rig.store.record(rig.key, True, probe.probe)
    assert await rig.state() is State.CLOSED


async def test_a_released_or_abandoned_probe_slot_frees_up(rig: Rig) -> None:
    await rig.fail(3)
    rig.clock.advance(CONFIG.cooldown_s)
    first = await rig.store.acquire(rig.key)
    assert first.probe
    await rig.store.release(rig.key, first.probe)  # its outcome said nothing about health
    second = await rig.store.acquire(rig.key)
    assert second.probe and second.probe != first.probe
    # Its holder dies: after the probe timeout another caller may probe.
    rig.clock.advance(CONFIG.probe_timeout_s - 0.1)
    assert not (await rig.store.acquire(rig.key)).allowed
    rig.clock.advance(0.2)
    third = await rig.store.acquire(rig.key)
    assert third.probe
    assert second.probe is not None
    await rig.store.record(rig.key, True, second.probe)  # the late report of the dead holder
    assert await rig.state() is State.HALF_OPEN


async def test_concurrent_callers_get_exactly_one_probe(rig: Rig) -> None:
    await rig.fail(3)
    rig.clock.advance(CONFIG.cooldown_s)
    tickets = await asyncio.gather(*(rig.store.acquire(rig.key) for _ in range(40)))
    assert sum(t.allowed for t in tickets) == 1


async def test_one_probe_across_processes_sharing_redis(redis_url: str) -> None:
    """Two stores on separate connections stand for two replicas."""
    clock, prefix, key = Clock(), f"igtest:{uuid.uuid4().hex[:8]}:", "fal:abc"
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    try:
        replicas = [RedisBreakers(client, prefix, CONFIG, clock) for client in clients]
        await replicas[0].record(key, False)  # failures seen by either replica add up
        await replicas[0].record(key, False)
        [view] = await replicas[1].views([key])
        assert view.state is State.CLOSED and view.consecutive_failures == 2
        await replicas[1].record(key, False)
        [view] = await replicas[0].views([key])
        assert view.state is State.OPEN
        clock.advance(CONFIG.cooldown_s)
        tickets = await asyncio.gather(*(replicas[i % 2].acquire(key) for i in range(40)))
        assert sum(t.allowed for t in tickets) == 1
    finally:
        for client in clients:
            await client.aclose()


async def test_unreachable_redis_falls_back_to_the_process_own_breakers() -> None:
    redis = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    try:
        store = RedisBreakers(redis, "igtest:", CONFIG, Clock())
        assert (await store.acquire("p")).allowed
        for _ in range(3):
            await store.record("p", False)
        [view] = await store.views(["p"])
        assert view.state is State.OPEN
        assert not (await store.acquire("p")).allowed
    finally:
        await redis.aclose()


def test_a_breaker_belongs_to_a_provider_as_configured() -> None:
    def keys(url: str) -> dict[str, str]:
        providers = {"fal": {"api_key": "k", "base_url": url}, "b": {"kind": "fal", "api_key": "k"}}
        return breaker_keys(Settings(_env_file=None, providers=providers))  # type: ignore[call-arg]

    first, moved = keys("http://127.0.0.1:1"), keys("http://127.0.0.1:2")
    assert first["fal"].startswith("fal:") and first["b"].startswith("b:")
    assert first["fal"] != moved["fal"] and first["b"] == moved["b"]
    assert keys("http://127.0.0.1:1") == first
