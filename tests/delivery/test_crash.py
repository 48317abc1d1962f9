"""A worker killed (SIGKILL) right after a job's terminal commit: the webhook still goes out.

Distributed shape on PostgreSQL + Redis: one API process, a worker started with the test-only
failpoint ``kill_after_terminal_commit`` (it kills itself the instant the commit returns, before
it could publish or deliver anything), then a second, normal worker. The outbox row committed
with the transition is what the second worker delivers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app.auth.keys import KeyHasher
from app.auth.service import issue_key
from app.db import create_engine, create_sessionmaker
from app.models import Job, WebhookDelivery
from app.setup import migrate
from tests.conftest import SECRET
from tests.delivery.receiver import Receiver
from tests.procs import processes


async def _rows(url: str, job_id: str) -> tuple[Job | None, list[WebhookDelivery]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            job = (await connection.execute(select(Job).where(Job.id == job_id))).first()
            rows = await connection.execute(
                select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
            )
            return job, list(rows.all())  # type: ignore[return-value]
    finally:
        await engine.dispose()


async def _issue_key(url: str) -> str:
    engine = create_engine(url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            issued = await issue_key(session, KeyHasher(SECRET.encode()), team_name="crash")
            await session.commit()
    finally:
        await engine.dispose()
    return issued.key


async def _exited(proc: object, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()  # type: ignore[attr-defined]
        if code is not None:
            return int(code)
        await asyncio.sleep(0.05)
    raise AssertionError("the worker did not die at the failpoint")


@pytest.mark.slow
async def test_worker_killed_right_after_the_terminal_commit_still_delivers_after_restart(
    fresh_pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, fresh_pg_url)
    receiver = Receiver()
    await receiver.start()
    env = {
        "IMAGEGATE_DATABASE_URL": fresh_pg_url,
        "IMAGEGATE_REDIS_URL": redis_url,
        "IMAGEGATE_REDIS_PREFIX": f"igcrash:{tmp_path.name}:",
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_LOG_LEVEL": "warning",
        "IMAGEGATE_SIMULATOR__ENABLED": "true",
        "IMAGEGATE_SIMULATOR__LATENCY_S": "0.2",
        "IMAGEGATE_WORKER_IDLE_INTERVAL_S": "0.1",
        "IMAGEGATE_ALLOW_HTTP_WEBHOOKS": "true",
        "IMAGEGATE_EGRESS_ALLOW_NETWORKS": '["127.0.0.1/32"]',
        "IMAGEGATE_EGRESS_ALLOWED_PORTS": f"[80, 443, {receiver.port}]",
        "IMAGEGATE_WEBHOOK_RETRY_SCHEDULE_S": "[0.2, 0.2, 0.2]",
    }
    try:
        with processes(env, tmp_path) as group:
            key = await _issue_key(fresh_pg_url)
            url = group.api()
            group.env["IMAGEGATE_FAILPOINTS"] = "kill_after_terminal_commit"
            doomed = group.start("worker", name="worker-1")
            group.env.pop("IMAGEGATE_FAILPOINTS")
            payload = {
                "model": "flux-2-dev",
                "input": {"prompt": "survive a crash"},
                "webhook": receiver.url("/hook"),
            }
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                created = await client.post(
                    "/v1/images", json=payload, headers={"Authorization": f"Bearer {key}"}
                )
            assert created.status_code == 202, created.text
            job_id = created.json()["job_id"]

            assert await _exited(doomed, 60) == -9, group.log_tail("worker-1")
            job, rows = await _rows(fresh_pg_url, job_id)
            assert job is not None and job.status == "completed"  # the commit happened
            [row] = rows
            assert (row.state, row.attempts) == ("pending", 0)  # and nothing was sent
            assert receiver.received == []

            group.start("worker", name="worker-2")
            [received] = await receiver.wait_for("/hook", 1, timeout=60)
            secret = group.run("webhooks", "secret", "--team", "crash")
            event = Webhook(secret).verify(received.body, received.headers)
            assert event["type"] == "image.completed" and event["data"]["job_id"] == job_id
            assert received.headers["webhook-id"] == row.webhook_id
            for _ in range(100):
                _, [row] = await _rows(fresh_pg_url, job_id)
                if row.state == "delivered":
                    break
                await asyncio.sleep(0.05)
            assert (row.state, row.attempts) == ("delivered", 1)
    finally:
        await receiver.stop()
