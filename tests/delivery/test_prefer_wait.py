"""``Prefer: wait=N``: the answer waits for the job's own transition, or N seconds at most."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import Backend
from tests.delivery.conftest import running
from tests.helpers import body, new_key


async def test_wait_5_on_a_1_second_job_answers_200_when_it_completes(
    isolated: Backend, tmp_path: Path
) -> None:
    simulator = {"latency_s": 1.0, "latency_jitter": 0.0}
    async with running(isolated, tmp_path, simulator=simulator) as gateway:
        client = gateway.client(await new_key(gateway.runtime))
        started = time.monotonic()
        response = await client.create(body("a one-second fox"), Prefer="wait=5")
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert response.headers["preference-applied"] == "wait=5"
        job = response.json()
        assert job["status"] == "completed" and job["result"]["images"]
        assert 0.9 <= elapsed < 5.0  # woken by the completion, not by the 5-second bound


async def test_wait_5_on_a_30_second_job_answers_202_after_5_seconds(
    isolated: Backend, tmp_path: Path
) -> None:
    simulator = {"latency_s": 30.0, "latency_jitter": 0.0}
    async with running(isolated, tmp_path, simulator=simulator) as gateway:
        client = gateway.client(await new_key(gateway.runtime))
        started = time.monotonic()
        response = await client.create(body("a thirty-second fox"), Prefer="wait=5")
        elapsed = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert response.headers["preference-applied"] == "wait=5"
        assert response.json()["status"] in ("pending", "processing")
        assert 5.0 <= elapsed < 10.0
        assert (await client.cancel(response.json()["job_id"])).status_code == 200


async def test_wait_0_answers_at_once_and_longer_waits_are_capped_at_60(
    isolated: Backend, tmp_path: Path
) -> None:
    simulator = {"latency_s": 0.5, "latency_jitter": 0.0}
    async with running(isolated, tmp_path, simulator=simulator) as gateway:
        client = gateway.client(await new_key(gateway.runtime))
        response = await client.create(body("an impatient fox"), Prefer="wait=0")
        assert response.status_code == 202, response.text
        assert response.headers["preference-applied"] == "wait=0"
        assert response.json()["status"] == "pending"
        # More than the contract's 60 s is applied as 60, and says so.
        capped = await client.create(body("a patient fox"), Prefer="respond-async, wait=600")
        assert capped.status_code == 200, capped.text
        assert capped.headers["preference-applied"] == "wait=60"
        assert capped.json()["status"] == "completed"
