"""Acceptance: 100 concurrent creates across 3 API processes (PostgreSQL + Redis) against a key
with burst 5 and 1 request a minute admit exactly 5, and every 429's ``Retry-After`` matches the
limiter's state in Redis (to the second, ``Retry-After`` being whole seconds rounded up).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from app.setup import migrate
from tests.conftest import SECRET
from tests.procs import free_port, processes, wait_ready

REQUESTS = 100
BURST = 5
PER_MINUTE = 1
INTERVAL_S = 60 / PER_MINUTE


@pytest.mark.slow
async def test_burst_5_across_3_api_processes_admits_exactly_5(
    fresh_pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, fresh_pg_url)
    prefix = f"igrl:{uuid.uuid4().hex[:8]}:"
    env = {
        "IMAGEGATE_DATABASE_URL": fresh_pg_url,
        "IMAGEGATE_REDIS_URL": redis_url,
        "IMAGEGATE_REDIS_PREFIX": prefix,
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_LOG_LEVEL": "warning",
        "IMAGEGATE_DB_POOL_SIZE": "4",  # the PostgreSQL server is shared with other tests
        "IMAGEGATE_SIMULATOR__ENABLED": "true",
    }
    with processes(env, tmp_path) as group:
        # Start the three APIs first and create the key while they boot (startup is slow here).
        ports = [free_port() for _ in range(3)]
        for i, port in enumerate(ports):
            group.start("api", "--port", str(port), name=f"api-{i}")
        key = group.run(
            "keys",
            "create",
            "--team",
            "bursty",
            "--rate-limit-per-minute",
            str(PER_MINUTE),
            "--rate-limit-burst",
            str(BURST),
        )
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            wait_ready(url)
        headers = {"Authorization": f"Bearer {key}"}
        clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=30) for url in urls]
        try:
            start = asyncio.Event()

            async def create(i: int) -> tuple[float, float, httpx.Response]:
                await start.wait()
                sent = time.time()
                body = {"model": "flux-2-dev", "input": {"prompt": f"burst {i}"}}
                response = await clients[i % 3].post("/v1/images", json=body)
                return sent, time.time(), response

            tasks = [asyncio.create_task(create(i)) for i in range(REQUESTS)]
            await asyncio.sleep(0.05)
            start.set()
            results = await asyncio.gather(*tasks)
        finally:
            for client in clients:
                await client.aclose()

    statuses = [response.status_code for _, _, response in results]
    assert statuses.count(202) == BURST, statuses
    assert statuses.count(429) == REQUESTS - BURST, statuses
    # Each process admitted some of them or none; together exactly the burst.
    admitted = [r for _, _, r in results if r.status_code == 202]
    remaining = sorted(int(r.headers["ratelimit"].split("r=")[1].split(";")[0]) for r in admitted)
    assert remaining == list(range(BURST))  # 4, 3, 2, 1, 0 once each: one shared bucket

    # The limiter's state: the key's TAT in Redis (µs on Redis's clock, the same host clock).
    with redis.Redis.from_url(redis_url) as plain:
        (tat_key,) = list(plain.scan_iter(match=f"{prefix}ratelimit:*"))
        tat = int(plain.get(tat_key) or 0) / 1e6
    allow_at = tat - (BURST - 1) * INTERVAL_S  # when the next request will be admitted
    for sent, received, response in results:
        if response.status_code != 429:
            continue
        problem = response.json()
        assert problem["code"] == "rate_limited"
        retry_after = int(response.headers["retry-after"])
        # Decided at some moment between sending and receiving:
        assert allow_at - received - 0.01 <= problem["retry_after_s"] <= allow_at - sent + 0.01
        assert retry_after == max(1, math.ceil(problem["retry_after_s"]))
        assert allow_at - received - 0.01 <= retry_after < allow_at - sent + 1.01
        assert response.headers["ratelimit-policy"] == f'"key";q={BURST};w=300'
