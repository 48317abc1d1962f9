"""Inbound upstream webhooks, with the gateway served over real HTTP so emulators can call it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.models import JobEvent, WebhookReceipt
from tests.conftest import Backend, Gateway, start_served_gateway
from tests.emulators.support import Knobs
from tests.helpers import new_key
from tests.providers.test_upstream_failures import payload
from tests.providers.upstreams import UPSTREAMS

NO_POLLS = {"first_poll_after_s": 30.0, "poll_cap_s": 30.0}  # only a webhook can move the job


async def _served(
    backend: Backend, tmp_path: Path, name: str, knobs: Knobs
) -> AsyncIterator[tuple[Gateway, Any]]:
    upstream = UPSTREAMS[name]
    emulator = upstream.make()
    emulator.reset(knobs)
    with upstream.serve(emulator) as url:
        providers = {name: upstream.settings(emulator, url, **NO_POLLS)}
        async for gateway in start_served_gateway(
            backend, tmp_path, providers=providers, simulator={"enabled": False}
        ):
            yield gateway, emulator


async def _events(gateway: Gateway, job_id: str, status: str) -> int:
    async with gateway.runtime.sessions() as session:
        query = select(func.count()).where(JobEvent.job_id == job_id, JobEvent.status == status)
        return int((await session.execute(query)).scalar_one())


async def test_signed_replicate_webhooks_complete_the_job_without_a_poll(
    backend: Backend, tmp_path: Path
) -> None:
    knobs = Knobs(latency=(0.2, 0.2), webhook_duplicate=True, webhook_out_of_order=True)
    async for gateway, emulator in _served(backend, tmp_path, "replicate", knobs):
        client = gateway.client(await new_key(gateway.runtime))
        job_id = (await client.create(payload(UPSTREAMS["replicate"]))).json()["job_id"]
        job = await client.wait(job_id, timeout=10)
        assert job["status"] == "completed", job
        assert emulator.calls.count("GET", "/v1/predictions/") == 0  # no poll was needed
        await asyncio.sleep(0.5)  # let the duplicate and the stale "processing" arrive
        assert {d.http_status for d in emulator.deliveries} == {200}
        assert len(emulator.deliveries) >= 4  # every event was sent twice, plus the stale one
        # Each webhook-id was applied once; the stale "processing" changed nothing.
        assert await _events(gateway, job_id, "completed") == 1
        assert (await client.get(job_id)).json()["status"] == "completed"
        async with gateway.runtime.sessions() as session:
            ids = (await session.execute(select(WebhookReceipt.event_id))).scalars().all()
        assert len(ids) == len(set(ids))


async def test_a_badly_signed_webhook_is_401_and_changes_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    knobs = Knobs(latency=(0.1, 0.1), webhook_signed=False)
    async for gateway, emulator in _served(backend, tmp_path, "replicate", knobs):
        client = gateway.client(await new_key(gateway.runtime))
        job_id = (await client.create(payload(UPSTREAMS["replicate"]))).json()["job_id"]
        for _ in range(100):
            if emulator.deliveries:
                break
            await asyncio.sleep(0.05)
        assert emulator.deliveries and {d.http_status for d in emulator.deliveries} == {401}
        job = (await client.get(job_id)).json()
        assert job["status"] == "pending" and job["stage"] == "upstream_queued"


async def test_a_stale_signed_timestamp_is_refused(backend: Backend, tmp_path: Path) -> None:
    import time

    from tests.emulators.replicate import sign

    async for gateway, emulator in _served(backend, tmp_path, "replicate", Knobs()):
        body = b'{"id": "nope", "status": "succeeded"}'
        old = str(int(time.time()) - 600)
        headers = {
            "webhook-id": "msg_old",
            "webhook-timestamp": old,
            "webhook-signature": sign(emulator.webhook_secret, "msg_old", old, body),
        }
        response = await gateway.http.post(
            "/v1/providers/replicate/webhook", content=body, headers=headers
        )
        assert response.status_code == 401


async def test_a_novita_hint_causes_exactly_one_poll(backend: Backend, tmp_path: Path) -> None:
    async for gateway, emulator in _served(backend, tmp_path, "novita", Knobs(latency=(0.2, 0.2))):
        client = gateway.client(await new_key(gateway.runtime))
        job_id = (await client.create(payload(UPSTREAMS["novita"]))).json()["job_id"]
        job = await client.wait(job_id, timeout=10)
        assert job["status"] == "completed", job
        assert emulator.calls.count("GET", "task-result") == 1


@pytest.mark.parametrize("name", ["fal", "coretoday"])
async def test_unsigned_hints_are_confirmed_by_a_poll(
    backend: Backend, tmp_path: Path, name: str
) -> None:
    async for gateway, _emulator in _served(backend, tmp_path, name, Knobs(latency=(0.2, 0.2))):
        client = gateway.client(await new_key(gateway.runtime))
        job_id = (await client.create(payload(UPSTREAMS[name]))).json()["job_id"]
        job = await client.wait(job_id, timeout=10)
        assert job["status"] == "completed", job
