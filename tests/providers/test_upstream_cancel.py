"""Cancelling a job that is running at an upstream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.support import Knobs
from tests.helpers import Client, new_key
from tests.providers.conftest import Wire
from tests.providers.test_upstream_failures import payload
from tests.providers.upstreams import UPSTREAMS

CANCEL_CALLS = {  # how each upstream's cancel looks on the wire
    "replicate": ("POST", "/cancel"),
    "fal": ("PUT", "/cancel"),
    "coretoday": ("DELETE", "/v1/predictions/"),
}


async def _running(client: Client, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = (await client.get(job_id)).json()
        if job["attempts"] and job["attempts"][-1]["upstream_id"]:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("the job never reached the upstream")


@pytest.mark.parametrize("name", sorted(CANCEL_CALLS))
async def test_cancel_reaches_the_upstream_and_the_job_ends_cancelled(
    wire: Wire, name: str
) -> None:
    upstream = UPSTREAMS[name]
    method, path_part = CANCEL_CALLS[name]
    async for gateway, emulator in wire(upstream, Knobs(latency=(5.0, 5.0))):
        client = gateway.client(await new_key(gateway.runtime))
        job_id = (await client.create(payload(upstream))).json()["job_id"]
        await _running(client, job_id)
        response = await client.cancel(job_id)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        for _ in range(100):  # the upstream cancel is sent right after the commit
            if emulator.calls.count(method, path_part):
                break
            await asyncio.sleep(0.02)
        assert emulator.calls.count(method, path_part) == 1
        job = (await client.get(job_id)).json()
        assert job["status"] == "cancelled"
        assert job["attempts"][-1]["status"] == "cancelled"


async def test_novita_has_no_cancel_the_job_ends_cancelled_and_the_late_result_is_ignored(
    wire: Wire, tmp_path: Path
) -> None:
    upstream = UPSTREAMS["novita"]
    async for gateway, emulator in wire(upstream, Knobs(latency=(0.4, 0.4))):
        client = gateway.client(await new_key(gateway.runtime))
        job_id = (await client.create(payload(upstream))).json()["job_id"]
        await _running(client, job_id)
        assert (await client.cancel(job_id)).json()["status"] == "cancelled"
        await asyncio.sleep(1.0)  # the upstream finishes meanwhile
        job = (await client.get(job_id)).json()
        assert job["status"] == "cancelled" and job["result"] is None
        stored = gateway.runtime.settings.resolved_storage_dir / job_id
        assert not stored.exists()  # the late image was never copied
        assert len(emulator.ledger) == 1
