"""PostgreSQL connections reset for 10 seconds: answers are fast 503s, nothing is lost, and the
service resumes by itself (reliability item 20).

The lease (5 s) runs out during the outage, so a dispatcher that got an upstream's answer just
before it records that answer after the reaper has fenced it: the job must still complete."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.chaos.proxy import Mode, TcpProxy
from tests.conftest import Backend, start_gateway
from tests.helpers import body, new_key

OUTAGE_S = 10.0


async def test_requests_answer_503_during_a_reset_outage_and_no_job_is_lost(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    target = urlsplit(pg_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    port = await proxy.start()
    proxied = pg_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{port}")
    backend = Backend("postgres", proxied, redis_url, f"igchaos:{tmp_path.name}:")
    try:
        async for gateway in start_gateway(
            backend, tmp_path, db_statement_timeout_s=2.0, lease_ttl_s=5.0
        ):
            client = gateway.client(await new_key(gateway.runtime))
            before = [(await client.create(body(f"before {i}"))).json()["job_id"] for i in range(5)]

            proxy.set(Mode.RESET)
            outage_answers: list[int] = []
            ended = time.monotonic() + OUTAGE_S
            while time.monotonic() < ended:
                started = time.monotonic()
                try:
                    response = await client.create(body("during"))
                    outage_answers.append(response.status_code)
                except httpx.HTTPError:  # pragma: no cover - the app answers, it does not hang
                    outage_answers.append(-1)
                assert time.monotonic() - started < 5.0  # answered within its deadline
                await asyncio.sleep(0.1)
            proxy.set(Mode.PASS)

            assert outage_answers and set(outage_answers) == {503}
            # Recovery needs no restart: new jobs are admitted and run again.
            recovered = None
            for _ in range(50):
                response = await client.create(body("after"))
                if response.status_code == 202:
                    recovered = response.json()["job_id"]
                    break
                await asyncio.sleep(0.2)
            assert recovered is not None
            for job_id in [*before, recovered]:
                job = await client.wait(job_id, timeout=30)
                assert job["status"] == "completed", job
    finally:
        await proxy.stop()
