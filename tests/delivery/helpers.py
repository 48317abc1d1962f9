"""Helpers for the delivery tests: team lookups, outbox rows, waiting on delivery states."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from app.models import WebhookDelivery
from app.runtime import Runtime
from app.webhooks.repository import DeliveryRepository
from app.webhooks.secrets import team_webhook_secret


async def team_of(runtime: Runtime, key: str) -> str:
    principal = await runtime.keys.verify(key)
    assert principal is not None
    return principal.team_id


async def secret_of(runtime: Runtime, team_id: str) -> str:
    async with runtime.sessions() as session:
        secret = await team_webhook_secret(session, team_id)
        await session.commit()
    return secret


async def deliveries(runtime: Runtime, job_id: str) -> Sequence[WebhookDelivery]:
    async with runtime.sessions() as session:
        return await DeliveryRepository(session).for_job(job_id)


async def settled(
    runtime: Runtime, job_id: str, count: int = 1, timeout: float = 15.0
) -> Sequence[WebhookDelivery]:
    """The job's deliveries once ``count`` of them exist and none is pending any more."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await deliveries(runtime, job_id)
        if len(rows) >= count and all(row.state != "pending" for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {job_id} not settled: {[r.state for r in rows]}")
        await asyncio.sleep(0.05)
