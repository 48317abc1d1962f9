"""Provider health as routing sees it: circuit breakers plus observed statistics.

``Health`` is the one long-lived object (``Runtime.health``). Dispatch asks it for a ticket
before each submit and reports every outcome; the poll and webhook paths report each finished
upstream job. Each attempt counts once: a refused submit as a failure, an accepted one by its
result (see ``report_submit``). Admission and ``GET /v1/providers`` read short-lived in-process
snapshots of the breakers and of the statistics, so routing never queries Redis or the database
per request.

A breaker belongs to a provider *as configured*: its key is the provider's name plus a
fingerprint of its kind and base URL, so pointing a provider elsewhere starts a fresh breaker.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from enum import StrEnum

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.kit.timeutil import utcnow
from app.providers.base import (
    ErrorCode,
    NotAccepted,
    OutcomeUnknown,
    Submitted,
    UpstreamState,
    UpstreamStatus,
)
from app.routing.breaker import (
    CLOSED,
    BreakerConfig,
    BreakerStore,
    BreakerView,
    MemoryBreakers,
    Ticket,
)
from app.routing.breaker_redis import RedisBreakers
from app.routing.repository import RoutingRepository
from app.routing.settings import RoutingSettings
from app.routing.stats import ObservedStats, summarise

log = structlog.get_logger(__name__)

Sessions = async_sessionmaker[AsyncSession]


def result_health(state: UpstreamState) -> bool | None:
    """What a finished upstream job says about its provider: ok, failed, or nothing."""
    if state.status is UpstreamStatus.SUCCEEDED:
        return True
    if state.status is UpstreamStatus.FAILED:
        code = state.error_code or ErrorCode.UPSTREAM_ERROR
        return False if code in (ErrorCode.UPSTREAM_ERROR, ErrorCode.UPSTREAM_TIMEOUT) else None
    return None  # still running, or cancelled


class Verdict(StrEnum):
    """What one submit says about its provider's health."""

    OK = "ok"  # a synchronous upstream answered with the result
    FAILED = "failed"  # refused, unanswered after sending, or a synchronous upstream failure
    ACCEPTED = "accepted"  # an asynchronous job started: its result will judge the attempt
    SILENT = "silent"  # the upstream rejected the input: no word on its health


def submit_verdict(outcome: Submitted | Exception) -> Verdict:
    if isinstance(outcome, Submitted):
        if outcome.state is None:
            return Verdict.ACCEPTED
        return Verdict.FAILED if result_health(outcome.state) is False else Verdict.OK
    if isinstance(outcome, NotAccepted | OutcomeUnknown):
        return Verdict.FAILED
    return Verdict.SILENT


def breaker_keys(settings: Settings) -> dict[str, str]:
    keys = {"simulator": "simulator"}
    for name, conf in settings.providers.items():
        identity = f"{conf.kind or name}|{conf.base_url or ''}"
        keys[name] = f"{name}:{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
    return keys


class Health:
    def __init__(
        self,
        breakers: BreakerStore,
        settings: RoutingSettings,
        sessions: Sessions | None = None,
        keys: Mapping[str, str] | None = None,
    ) -> None:
        self.breakers = breakers
        self.settings = settings
        self._sessions = sessions
        self._keys = dict(keys or {})
        self._views: tuple[float, dict[str, BreakerView]] = (-1.0, {})
        self._stats: tuple[float, ObservedStats] | None = None
        self._stats_lock = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None

    @classmethod
    def unobserved(cls) -> Health:
        """In-process breakers with default settings and no statistics (a bare Runtime)."""
        settings = RoutingSettings()
        return cls(MemoryBreakers(BreakerConfig.from_settings(settings)), settings)

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None, sessions: Sessions) -> Health:
        config = BreakerConfig.from_settings(settings.routing)
        store: BreakerStore = (
            MemoryBreakers(config)
            if redis is None
            else RedisBreakers(redis, settings.redis_prefix, config)
        )
        return cls(store, settings.routing, sessions, breaker_keys(settings))

    def key(self, provider: str) -> str:
        return self._keys.get(provider, provider)

    # --- dispatch: the authoritative, shared breaker ------------------------------------------

    async def acquire(self, provider: str) -> Ticket:
        """May ``provider`` get a submit now? A half-open breaker admits one probe in total."""
        return await self.breakers.acquire(self.key(provider))

    async def report_submit(
        self, provider: str, ticket: Ticket, outcome: Submitted | Exception
    ) -> None:
        """A submit made under ``ticket`` ended.

        Each attempt counts once towards the breaker: a refused or unanswered submit as a
        failure, an accepted one by its result later (``report_result``). Acceptance is the
        probe's verdict, though: a half-open breaker closes as soon as its probe gets through.
        """
        key = self.key(provider)
        verdict = submit_verdict(outcome)
        if verdict in (Verdict.OK, Verdict.FAILED):
            await self.breakers.record(key, verdict is Verdict.OK, ticket.probe)
        elif ticket.probe and verdict is Verdict.ACCEPTED:
            await self.breakers.record(key, True, ticket.probe)
        elif ticket.probe:
            await self.breakers.release(key, ticket.probe)
        if verdict is Verdict.FAILED or ticket.probe:
            self._views = (-1.0, {})  # the state may have moved: this process sees it at once

    async def give_back(self, provider: str, ticket: Ticket) -> None:
        """A ticket that was never used (the job moved on before the submit)."""
        if ticket.probe:
            await self.breakers.release(self.key(provider), ticket.probe)

    async def report_result(self, provider: str, ok: bool | None) -> None:
        """An upstream job finished (see ``result_health``), seen by a poll or a webhook."""
        if ok is not None:
            await self.breakers.record(self.key(provider), ok)

    # --- admission and GET /v1/providers: snapshots ------------------------------------------

    async def breaker_views(self, providers: Sequence[str]) -> dict[str, BreakerView]:
        taken, views = self._views
        fresh = time.monotonic() - taken < self.settings.breaker_view_ttl_s
        if not fresh or any(p not in views for p in providers):
            names = sorted(set(providers) | set(views))
            found = await self.breakers.views([self.key(n) for n in names])
            views = dict(zip(names, found, strict=True))
            self._views = (time.monotonic(), views)
        return {p: views.get(p, CLOSED) for p in providers}

    async def observed(self, *, wait: bool = False) -> ObservedStats:
        """Statistics over the window, at most ``stats_ttl_s`` old once warmed up.

        Without ``wait`` this never waits on the database: stale figures start a refresh in the
        background and are returned meanwhile. Admission relies on that: it runs inside its
        request's transaction, and on SQLite a second connection would queue behind it.
        """
        if self._sessions is None:
            return ObservedStats(self.settings.stats_window_s)
        current = self._stats
        if current is not None and time.monotonic() - current[0] < self.settings.stats_ttl_s:
            return current[1]
        if wait:
            return await self._refresh()
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_quietly(), name="routing-stats")
        return current[1] if current is not None else ObservedStats(self.settings.stats_window_s)

    async def aclose(self) -> None:
        """Let a background statistics refresh finish before the engine goes away."""
        task = self._refreshing
        if task is not None and not task.done():
            await asyncio.gather(task, return_exceptions=True)

    async def _refresh(self) -> ObservedStats:
        async with self._stats_lock:  # one query at a time; later callers reuse its answer
            current = self._stats
            if current is not None and time.monotonic() - current[0] < self.settings.stats_ttl_s:
                return current[1]
            stats = await self._query()
            self._stats = (time.monotonic(), stats)
            return stats

    async def _refresh_quietly(self) -> None:
        try:
            await self._refresh()
        except Exception as exc:  # the next request tries again; routing keeps its old figures
            log.warning("routing statistics refresh failed", error=type(exc).__name__)

    async def _query(self) -> ObservedStats:
        assert self._sessions is not None
        window = self.settings.stats_window_s
        since = utcnow() - timedelta(seconds=window)
        async with self._sessions() as session:
            repo = RoutingRepository(session)
            rows = await repo.recent_attempts(since, self.settings.stats_max_attempts)
            in_flight = await repo.in_flight()
        return summarise(rows, in_flight, window)
