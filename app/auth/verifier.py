"""``KeyVerifier``: a presented API key to a ``Principal``, with a short in-process cache.

- A malformed key or a bad checksum is refused before any hashing or database query.
- Results (valid or not) are cached by the key's HMAC for ``ttl`` seconds: a revocation, an
  expiry moved earlier or a scope change reaches other processes within ``ttl``; the process that
  made the change drops its own entries at once (``forget``). An expiry or a rolled secret's grace
  end is checked against the clock even on a cache hit, so those stop exactly on time.
- Concurrent misses for one key share a single database load.
- A database load also records ``last_used_at`` (so it is at most ``ttl`` stale per process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.keys import KeyHasher, well_formed
from app.auth.principal import Principal
from app.auth.repository import AuthRepository
from app.kit.timeutil import utcnow
from app.models import ApiKey


@dataclass(frozen=True, slots=True)
class _Entry:
    fresh_until: float  # on the verifier's monotonic clock
    principal: Principal | None
    key_id: str | None  # also for a refused key that exists (expired, revoked, grace over)


def principal_for(row: ApiKey, digest: str, now: datetime) -> Principal | None:
    """The principal a key row grants to the secret with HMAC ``digest`` at ``now``, if any."""
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    valid_until = row.expires_at
    if digest != row.secret_hmac:  # the previous secret of a rolled key
        grace_end = row.previous_secret_expires_at
        if grace_end is None or grace_end <= now:
            return None
        valid_until = grace_end if valid_until is None else min(valid_until, grace_end)
    return Principal(
        key_id=row.id,
        team_id=row.team_id,
        scopes=frozenset(row.scopes),
        rate_limit_per_minute=row.rate_limit_per_minute,
        rate_limit_burst=row.rate_limit_burst,
        valid_until=valid_until,
    )


class KeyVerifier:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hasher: KeyHasher,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utcnow,
        max_entries: int = 50_000,
    ) -> None:
        self.sessions = sessions
        self.hasher = hasher
        self.ttl = ttl
        self.clock = clock  # cache freshness
        self.wall_clock = wall_clock  # expiry and grace ends
        self.max_entries = max_entries
        self._cache: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[Principal | None]] = {}

    async def verify(self, key: str) -> Principal | None:
        if not well_formed(key):
            return None  # refused without a database query
        digest = self.hasher(key)
        entry = self._cache.get(digest)
        if entry is not None and entry.fresh_until > self.clock():
            return self._still_valid(digest, entry.principal)
        loading = self._loading.get(digest)
        if loading is None:
            loading = asyncio.ensure_future(self._load_and_cache(digest))
            self._loading[digest] = loading
            loading.add_done_callback(lambda _: self._loading.pop(digest, None))
        # Shielded: one caller going away must not cancel the load the others wait for.
        principal = await asyncio.shield(loading)
        return self._still_valid(digest, principal)

    def forget(self, key_id: str) -> None:
        """Drop this process's cached answers for a key (after revoking, rolling or editing it)."""
        stale = [digest for digest, entry in self._cache.items() if entry.key_id == key_id]
        for digest in stale:
            self._cache.pop(digest, None)

    def _still_valid(self, digest: str, principal: Principal | None) -> Principal | None:
        valid_until = principal.valid_until if principal is not None else None
        if valid_until is not None and valid_until <= self.wall_clock():
            self._cache.pop(digest, None)
            return None
        return principal

    async def _load_and_cache(self, digest: str) -> Principal | None:
        principal, key_id = await self._load(digest)
        if len(self._cache) >= self.max_entries:
            self._evict()
        self._cache[digest] = _Entry(self.clock() + self.ttl, principal, key_id)
        return principal

    async def _load(self, digest: str) -> tuple[Principal | None, str | None]:
        async with self.sessions.begin() as session:
            repo = AuthRepository(session)
            row = await repo.key_by_hmac(digest)
            if row is None:
                return None, None
            now = self.wall_clock()
            principal = principal_for(row, digest, now)
            if principal is not None:
                await repo.touch(row.id, now)
            return principal, row.id

    def _evict(self) -> None:
        now = self.clock()
        self._cache = {d: e for d, e in self._cache.items() if e.fresh_until > now}
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
