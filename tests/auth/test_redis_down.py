"""Redis stopped mid-run (a private ``redis-server``): the API keeps answering, rate limits fall
back to the documented per-process policy, and shared limits come back with Redis, no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

from app.auth.ratelimit_redis import ResilientLimiter
from tests.auth.conftest import admin_headers
from tests.conftest import Backend, start_gateway
from tests.helpers import body
from tests.procs import RedisServer


async def test_api_keeps_answering_with_redis_stopped_and_recovers(
    pg_url: str, private_redis: RedisServer, tmp_path: Path
) -> None:
    backend = Backend("postgres", pg_url, private_redis.url, f"igdown:{uuid.uuid4().hex[:8]}:")
    # Two API replicas assumed: while Redis is down each enforces half the burst.
    gateways = start_gateway(backend, tmp_path, run_worker=True, rate_limit_replicas=2)
    async with contextlib.aclosing(gateways):
        gateway = await anext(gateways)
        limiter = gateway.runtime.limiter
        assert isinstance(limiter, ResilientLimiter)
        admin = await admin_headers(gateway)
        team = await gateway.http.post(
            "/v1/admin/teams", json={"name": f"down-{uuid.uuid4().hex[:6]}"}, headers=admin
        )
        created = await gateway.http.post(
            "/v1/admin/keys",
            json={"team_id": team.json()["id"], "rate_limit_per_minute": 1, "rate_limit_burst": 4},
            headers=admin,
        )
        client = gateway.client(created.json()["key"])
        key_id = created.json()["id"]

        # Redis up: the shared limit (burst 4) holds, and lives in Redis.
        answers = [await client.create(body()) for _ in range(5)]
        assert [a.status_code for a in answers] == [202, 202, 202, 202, 429]
        job_id = answers[0].json()["job_id"]
        assert (await client.wait(job_id))["status"] == "completed"
        with private_redis.client() as plain:
            assert plain.exists(f"{backend.redis_prefix}ratelimit:{key_id}") == 1

        private_redis.stop()

        # Redis down: reads still answer (from the job store), and creates are limited per
        # process at burst 4 / 2 replicas = 2, then 429 with a Retry-After.
        assert (await client.get(job_id)).status_code == 200
        statuses = [(await client.create(body())).status_code for _ in range(3)]
        assert statuses == [202, 202, 429]
        assert limiter.degraded
        refused = await client.create(body())
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-policy"] == '"key";q=2;w=120'
        ready = await gateway.http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "unavailable"
        # Jobs admitted while Redis is down still run to the end.
        listed = await gateway.http.get("/v1/images", params={"limit": 2}, headers=client.headers)
        newest = listed.json()["data"][0]["job_id"]
        assert (await client.wait(newest))["status"] == "completed"

        # Redis back (empty, as after a restart): shared limits resume without a restart.
        private_redis.start()
        await asyncio.sleep(1.1)  # the limiter leaves Redis alone for 1 s after a failure
        statuses = [(await client.create(body())).status_code for _ in range(5)]
        assert statuses == [202, 202, 202, 202, 429]
        assert not limiter.degraded
        with private_redis.client() as plain:
            assert plain.exists(f"{backend.redis_prefix}ratelimit:{key_id}") == 1
