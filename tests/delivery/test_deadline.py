"""Per-job deadlines: operator default, request override, upstream cancel when overdue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import Backend, Gateway
from tests.delivery.conftest import running
from tests.emulators.support import Knobs
from tests.helpers import body, new_key
from tests.providers.upstreams import UPSTREAMS


async def test_an_overdue_job_is_cancelled_upstream_and_fails_deadline_exceeded(
    isolated: Backend, tmp_path: Path
) -> None:
    upstream = UPSTREAMS["replicate"]  # an upstream with a cancel endpoint
    emulator = upstream.make()
    emulator.reset(Knobs(latency=(30.0, 30.0)))
    with upstream.serve(emulator) as url:
        providers = {upstream.name: upstream.settings(emulator, url)}
        async with running(
            isolated, tmp_path, providers=providers, simulator={"enabled": False}
        ) as gateway:
            client = gateway.client(await new_key(gateway.runtime))
            created = await client.create({**body("a patient fox"), "deadline_s": 1})
            assert created.status_code == 202, created.text
            job = await client.wait(created.json()["job_id"], timeout=20)
            assert job["status"] == "failed", job
            assert job["error"]["code"] == "deadline_exceeded"
            assert job["attempts"][-1]["status"] == "cancelled"
            for _ in range(100):  # the upstream cancel follows the commit
                if emulator.calls.count("POST", "/cancel"):
                    break
                await asyncio.sleep(0.02)
            assert emulator.calls.count("POST", "/cancel") == 1
            assert len(emulator.ledger) == 1


async def test_deadline_override_is_bounded_by_the_operator(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    limit = gateway.runtime.settings.job_deadline_max_s
    too_long = await client.create({**body(), "deadline_s": int(limit) + 1})
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["loc"] == ["deadline_s"]
    for bad in (0, -5, "soon"):
        answer = await client.create({**body(), "deadline_s": bad})
        assert answer.status_code == 422 and answer.json()["errors"][0]["loc"] == ["deadline_s"]
    ok = await client.create({**body(), "deadline_s": 120})
    assert ok.status_code == 202
