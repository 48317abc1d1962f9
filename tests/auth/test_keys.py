"""API keys: format and checksum, no database query for a bad checksum, revocation and expiry
within the cache TTL, a rolled key's grace period, last use, and team isolation.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.keys import KEY_LENGTH, PREFIX, generate_key, well_formed
from app.auth.verifier import KeyVerifier
from app.kit.timeutil import utcnow
from app.models import ApiKey
from tests.auth.conftest import admin_headers
from tests.conftest import Backend, Gateway, start_gateway
from tests.helpers import body, new_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeWall:
    """A settable wall clock (expiry and grace ends are wall-clock times)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


class StatementCounter:
    """Counts every SQL statement the engine sends, from any task."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.count = 0

    def _seen(self, *_: Any) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def _flip_last(key: str) -> str:
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


def test_key_format_and_checksum() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(PREFIX) and len(key) == KEY_LENGTH and well_formed(key)
        assert not well_formed(_flip_last(key))
        # A single mistyped character in the secret is caught by the checksum.
        typo = key[:10] + ("x" if key[10] != "x" else "y") + key[11:]
        assert not well_formed(typo)
    assert not well_formed("ig_short")
    assert not well_formed("xx_" + next(iter(keys))[3:])
    assert not well_formed(next(iter(keys))[:-1] + "!")


@pytest.fixture
async def quiet_gateway(sqlite_backend: Backend, tmp_path: Any) -> Any:
    """A gateway without a worker, so every statement on its engine is the request's."""
    async for gw in start_gateway(sqlite_backend, tmp_path, run_worker=False):
        yield gw


async def test_bad_checksum_is_refused_without_a_database_query(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    key = await new_key(gateway.runtime)
    bad = [_flip_last(key), key[:-1], key + "A", "ig_" + "A" * 49, "sk-not-ours", " "]
    with StatementCounter(gateway.runtime.engine) as counter:
        for presented in bad:
            for headers in ({"Authorization": f"Bearer {presented}"}, {"X-API-Key": presented}):
                response = await gateway.http.get("/v1/images", headers=headers)
                assert response.status_code == 401, presented
                assert response.json()["code"] == "unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")
        assert counter.count == 0
        # The listener does see queries: a well-formed unknown key costs one lookup.
        unknown = generate_key()
        response = await gateway.http.get("/v1/images", headers={"X-API-Key": unknown})
        assert response.status_code == 401
        assert counter.count >= 1
        looked_up = counter.count
        # ...and only one: the negative answer is cached too.
        await gateway.http.get("/v1/images", headers={"X-API-Key": unknown})
        assert counter.count == looked_up


async def test_concurrent_first_uses_share_one_lookup(quiet_gateway: Gateway) -> None:
    gateway = quiet_gateway
    key = await new_key(gateway.runtime)
    with StatementCounter(gateway.runtime.engine) as counter:
        principals = await asyncio.gather(*(gateway.runtime.keys.verify(key) for _ in range(50)))
    assert len(set(principals)) == 1 and principals[0] is not None
    # One SELECT and one UPDATE of last_used_at (plus the transaction's BEGIN on SQLite).
    assert counter.count <= 3


async def _set(gateway: Gateway, key_id: str, **values: Any) -> None:
    async with gateway.runtime.sessions.begin() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


async def test_revoked_and_expired_keys_stop_within_the_cache_ttl(gateway: Gateway) -> None:
    """Another process's cache (a second verifier, on a controlled clock) sees changes made
    elsewhere only when its TTL runs out; an expiry time is honoured even from the cache."""
    runtime = gateway.runtime
    clock = FakeClock()
    replica = KeyVerifier(runtime.sessions, runtime.hasher, ttl=30, clock=clock)

    revoked_key = await new_key(runtime)
    principal = await replica.verify(revoked_key)
    assert principal is not None
    await _set(gateway, principal.key_id, revoked_at=utcnow())
    clock.now += 29.9
    assert await replica.verify(revoked_key) == principal  # still cached, as documented
    clock.now += 0.2
    assert await replica.verify(revoked_key) is None  # the TTL ran out: refused

    expired_key = await new_key(runtime)
    principal = await replica.verify(expired_key)
    assert principal is not None
    await _set(gateway, principal.key_id, expires_at=utcnow() - timedelta(seconds=1))
    clock.now += 30.1
    assert await replica.verify(expired_key) is None

    # An expiry that passes while the key is cached stops it on time, TTL or not.
    wall = FakeWall()
    timed = KeyVerifier(runtime.sessions, runtime.hasher, ttl=30, clock=clock, wall_clock=wall)
    soon_key = await new_key(runtime)
    soon = await timed.verify(soon_key)
    assert soon is not None
    expiry = wall.now + timedelta(seconds=5)
    await _set(gateway, soon.key_id, expires_at=expiry)
    clock.now += 30.1
    reloaded = await timed.verify(soon_key)
    assert reloaded is not None and reloaded.valid_until == expiry
    wall.now = expiry - timedelta(milliseconds=1)
    assert await timed.verify(soon_key) is not None
    wall.now = expiry
    assert await timed.verify(soon_key) is None  # well inside the TTL, yet refused


async def test_revocation_through_the_admin_api_is_immediate_in_that_process(
    gateway: Gateway,
) -> None:
    admin = await admin_headers(gateway)
    key = await new_key(gateway.runtime)
    client = gateway.client(key)
    assert (await client.create(body())).status_code == 202
    key_id = (await gateway.runtime.keys.verify(key)).key_id  # type: ignore[union-attr]
    revoked = await gateway.http.post(f"/v1/admin/keys/{key_id}/revoke", headers=admin)
    assert revoked.status_code == 200
    refused = await client.create(body())
    assert refused.status_code == 401
    assert refused.json()["detail"] == "the API key is invalid, expired or revoked"


async def test_rolled_key_old_secret_works_until_the_grace_period_ends(gateway: Gateway) -> None:
    admin = await admin_headers(gateway)
    old = await new_key(gateway.runtime)
    key_id = (await gateway.runtime.keys.verify(old)).key_id  # type: ignore[union-attr]
    rolled = await gateway.http.post(
        f"/v1/admin/keys/{key_id}/roll", json={"grace_period_s": 3600}, headers=admin
    )
    assert rolled.status_code == 200, rolled.text
    new = rolled.json()["key"]
    assert new != old and rolled.json()["prefix"] == new[:11]
    grace_end = datetime.fromisoformat(rolled.json()["previous_secret_expires_at"])
    for secret in (old, new):
        assert (await gateway.client(secret).create(body())).status_code == 202
    # Both secrets are the same key: same team, same jobs.
    job = (await gateway.client(old).create(body())).json()["job_id"]
    assert (await gateway.client(new).get(job)).status_code == 200

    # On a controlled wall clock: the old secret works up to the grace end, from the cache or
    # from the database, and not a millisecond after; the new one goes on.
    wall = FakeWall()
    runtime = gateway.runtime
    replica = KeyVerifier(runtime.sessions, runtime.hasher, ttl=60, wall_clock=wall)
    principal = await replica.verify(old)
    assert principal is not None and principal.key_id == key_id
    assert principal.valid_until is not None
    assert abs(principal.valid_until - grace_end) < timedelta(milliseconds=1)
    grace_end = principal.valid_until  # the API shows milliseconds; the database keeps µs
    wall.now = grace_end - timedelta(milliseconds=1)
    assert await replica.verify(old) is not None
    wall.now = grace_end
    assert await replica.verify(old) is None
    assert await replica.verify(new) is not None
    fresh = KeyVerifier(runtime.sessions, runtime.hasher, ttl=60, wall_clock=wall)
    assert await fresh.verify(old) is None and await fresh.verify(new) is not None

    # And in real time, through the API: a one-second grace is over after a second.
    short = await gateway.http.post(
        f"/v1/admin/keys/{key_id}/roll", json={"grace_period_s": 1}, headers=admin
    )
    newest = short.json()["key"]
    await asyncio.sleep(1.05)
    assert (await gateway.client(new).create(body())).status_code == 401
    assert (await gateway.client(newest).create(body())).status_code == 202


async def test_roll_without_grace_and_default_grace(gateway: Gateway) -> None:
    admin = await admin_headers(gateway)
    old = await new_key(gateway.runtime)
    key_id = (await gateway.runtime.keys.verify(old)).key_id  # type: ignore[union-attr]
    default = await gateway.http.post(f"/v1/admin/keys/{key_id}/roll", headers=admin)
    assert default.status_code == 200
    grace_end = default.json()["previous_secret_expires_at"]
    assert grace_end is not None
    hours = (datetime.fromisoformat(grace_end) - utcnow()).total_seconds() / 3600
    assert 23.9 < hours <= 24
    second = default.json()["key"]
    # Rolling again with no grace: the newest secret alone works (the older two stop at once).
    now_only = await gateway.http.post(
        f"/v1/admin/keys/{key_id}/roll", json={"grace_period_s": 0}, headers=admin
    )
    third = now_only.json()["key"]
    assert now_only.json()["previous_secret_expires_at"] is None
    assert (await gateway.client(old).create(body())).status_code == 401
    assert (await gateway.client(second).create(body())).status_code == 401
    assert (await gateway.client(third).create(body())).status_code == 202
    bad = await gateway.http.post(
        f"/v1/admin/keys/{key_id}/roll", json={"grace_period_s": -5}, headers=admin
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["grace_period_s"]


async def test_a_key_sees_only_its_own_teams_jobs(gateway: Gateway) -> None:
    mine = gateway.client(await new_key(gateway.runtime, team=f"a-{uuid.uuid4().hex[:6]}"))
    theirs = gateway.client(await new_key(gateway.runtime, team=f"b-{uuid.uuid4().hex[:6]}"))
    job = (await mine.create(body())).json()["job_id"]
    assert (await theirs.get(job)).status_code == 404
    assert (await theirs.cancel(job)).status_code == 404
    events = await gateway.http.get(f"/v1/images/{job}/events", headers=theirs.headers)
    assert events.status_code == 404
    listed = await gateway.http.get("/v1/images", headers=theirs.headers)
    assert job not in listed.text
    assert (await mine.get(job)).status_code == 200


async def test_extending_an_expired_key_through_the_admin_api_is_immediate(
    gateway: Gateway,
) -> None:
    admin = await admin_headers(gateway)
    key = await new_key(gateway.runtime)
    key_id = (await gateway.runtime.keys.verify(key)).key_id  # type: ignore[union-attr]
    await _set(gateway, key_id, expires_at=utcnow() - timedelta(seconds=1))
    gateway.runtime.keys.forget(key_id)
    assert (await gateway.client(key).create(body())).status_code == 401  # refusal now cached
    later = (utcnow() + timedelta(days=1)).isoformat()
    patched = await gateway.http.patch(
        f"/v1/admin/keys/{key_id}", json={"expires_at": later}, headers=admin
    )
    assert patched.status_code == 200 and patched.json()["status"] == "active"
    assert (await gateway.client(key).create(body())).status_code == 202
