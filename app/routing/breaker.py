"""Circuit breakers per provider: the state machine, and its in-process store.

    closed ──(N failures in a row, or a failure ratio over the window)──▶ open
    open ──(cool-down passes)──▶ half-open: exactly ONE submit, the probe, is let through
    half-open ──probe accepted──▶ closed        half-open ──probe failed──▶ open (new cool-down)

While open or half-open only the probe's own outcome counts: late results of jobs submitted
before the breaker opened neither close nor extend it. A probe whose holder dies frees its slot
after ``probe_timeout_s``. ``breaker_redis`` runs the same machine in Redis (Lua) so every process
shares one breaker per provider; this module's store serves the embedded single process, and the
Redis store falls back to it while Redis is unreachable.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from app.routing.settings import RoutingSettings

BUCKETS = 10  # the failure-ratio window slides in tenths
PROBE_RECHECK_S = 1.0  # a refused caller looks again this soon while someone else probes

Clock = Callable[[], float]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    consecutive_failures: int = 5
    failure_ratio: float = 0.5
    min_calls: int = 20
    window_s: float = 60.0
    cooldown_s: float = 30.0
    probe_timeout_s: float = 90.0

    @classmethod
    def from_settings(cls, settings: RoutingSettings) -> BreakerConfig:
        return cls(
            consecutive_failures=settings.breaker_consecutive_failures,
            failure_ratio=settings.breaker_failure_ratio,
            min_calls=settings.breaker_min_calls,
            window_s=settings.breaker_window_s,
            cooldown_s=settings.breaker_cooldown_s,
            probe_timeout_s=settings.breaker_probe_timeout_s,
        )

    @property
    def bucket_s(self) -> float:
        return self.window_s / BUCKETS


@dataclass(frozen=True, slots=True)
class Ticket:
    """The answer to "may this provider get a submit now?"."""

    allowed: bool
    probe: str | None = None  # the probe's token when this submit is the half-open probe
    retry_in: float = 0.0  # when refused: seconds until asking again is worthwhile


@dataclass(frozen=True, slots=True)
class BreakerView:
    state: State
    retry_in: float = 0.0
    consecutive_failures: int = 0
    window_calls: int = 0
    window_failures: int = 0


CLOSED = BreakerView(State.CLOSED)


class BreakerStore(Protocol):
    """One breaker per key (a provider); every method is a single atomic step."""

    async def acquire(self, key: str) -> Ticket: ...

    async def record(self, key: str, ok: bool, probe: str | None = None) -> None: ...

    async def release(self, key: str, probe: str) -> None:
        """Give a probe slot back without a verdict (the outcome said nothing about health)."""

    async def views(self, keys: Sequence[str]) -> list[BreakerView]: ...


def new_token() -> str:
    return secrets.token_hex(8)


@dataclass
class Breaker:
    """One provider's breaker state; ``opened_until == 0`` means closed."""

    opened_until: float = 0.0
    probe_until: float = 0.0
    probe: str = ""
    consecutive: int = 0
    buckets: dict[int, tuple[int, int]] = field(default_factory=dict)  # -> (calls, failures)

    def acquire(self, now: float, config: BreakerConfig, token: str) -> Ticket:
        if self.opened_until == 0:
            return Ticket(True)
        if now < self.opened_until:
            return Ticket(False, retry_in=self.opened_until - now)
        if self.probe_until > now:
            return Ticket(False, retry_in=min(self.probe_until - now, PROBE_RECHECK_S))
        self.probe, self.probe_until = token, now + config.probe_timeout_s
        return Ticket(True, probe=token)

    def record(self, now: float, config: BreakerConfig, ok: bool, probe: str | None) -> None:
        if self.opened_until != 0:
            if not probe or probe != self.probe:
                return  # not the probe: a stale outcome from before the breaker opened
            if ok:
                self._reset()
            else:
                self.probe, self.probe_until = "", 0.0
                self.opened_until = now + config.cooldown_s
            return
        calls, failures = self._window(now, config)
        bucket = int(now // config.bucket_s)
        in_bucket = self.buckets.get(bucket, (0, 0))
        self.buckets[bucket] = (in_bucket[0] + 1, in_bucket[1] + (0 if ok else 1))
        calls, failures = calls + 1, failures + (0 if ok else 1)
        self.consecutive = 0 if ok else self.consecutive + 1
        tripped = self.consecutive >= config.consecutive_failures
        if calls >= config.min_calls and failures / calls >= config.failure_ratio:
            tripped = True
        if tripped:
            self._reset()
            self.opened_until = now + config.cooldown_s

    def release(self, probe: str) -> None:
        if probe and probe == self.probe:
            self.probe, self.probe_until = "", 0.0

    def view(self, now: float, config: BreakerConfig) -> BreakerView:
        if self.opened_until == 0:
            calls, failures = self._window(now, config)
            return BreakerView(State.CLOSED, 0.0, self.consecutive, calls, failures)
        if now < self.opened_until:
            return BreakerView(State.OPEN, self.opened_until - now)
        wait = min(self.probe_until - now, PROBE_RECHECK_S) if self.probe_until > now else 0.0
        return BreakerView(State.HALF_OPEN, wait)

    def _window(self, now: float, config: BreakerConfig) -> tuple[int, int]:
        oldest = int(now // config.bucket_s) - BUCKETS + 1
        for stale in [b for b in self.buckets if b < oldest]:
            del self.buckets[stale]
        return sum(c for c, _ in self.buckets.values()), sum(f for _, f in self.buckets.values())

    def _reset(self) -> None:
        self.opened_until = self.probe_until = 0.0
        self.probe, self.consecutive = "", 0
        self.buckets.clear()


class MemoryBreakers:
    """Breakers for one process (the embedded mode, and the fallback while Redis is down)."""

    def __init__(self, config: BreakerConfig, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self._breakers: dict[str, Breaker] = {}

    def _get(self, key: str) -> Breaker:
        return self._breakers.setdefault(key, Breaker())

    async def acquire(self, key: str) -> Ticket:
        return self._get(key).acquire(self.clock(), self.config, new_token())

    async def record(self, key: str, ok: bool, probe: str | None = None) -> None:
        self._get(key).record(self.clock(), self.config, ok, probe)

    async def release(self, key: str, probe: str) -> None:
        self._get(key).release(probe)

    async def views(self, keys: Sequence[str]) -> list[BreakerView]:
        now = self.clock()
        known = self._breakers
        return [known[k].view(now, self.config) if k in known else CLOSED for k in keys]
