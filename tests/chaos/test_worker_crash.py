"""Workers killed at random (SIGKILL) and restarted while 300 jobs run: afterwards every job is
terminal, and the simulator's ledger holds no submission the gateway does not know of and at
most one per recorded attempt (reliability item 1, with a 20-second storm instead of a minute)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from app.setup import migrate
from tests.conftest import SECRET
from tests.procs import processes
from tests.test_multiprocess import _wait_all_terminal

JOBS = 300
STORM_S = 20.0


@pytest.mark.slow
async def test_sigkilled_workers_lose_no_job_and_pay_nothing_twice(
    fresh_pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, fresh_pg_url)
    ledger = tmp_path / "ledger.jsonl"
    env = {
        "IMAGEGATE_DATABASE_URL": fresh_pg_url,
        "IMAGEGATE_REDIS_URL": redis_url,
        "IMAGEGATE_REDIS_PREFIX": f"igcrash:{tmp_path.name}:",
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_LOG_LEVEL": "warning",
        "IMAGEGATE_SIMULATOR__ENABLED": "true",
        "IMAGEGATE_SIMULATOR__LATENCY_S": "0.5",
        "IMAGEGATE_SIMULATOR__LEDGER_PATH": str(ledger),
        "IMAGEGATE_LEASE_TTL_S": "3",
        "IMAGEGATE_SUBMIT_UNKNOWN_GRACE_S": "1",
    }
    rng = random.Random(5)
    with processes(env, tmp_path) as group:
        key = group.run("keys", "create", "--team", "chaos")
        workers = [group.start("worker", name=f"worker-{i}") for i in range(3)]
        url = group.api()
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            ids: list[str] = []
            for start in range(0, JOBS, 50):
                batch = [
                    client.post(
                        "/v1/images", json={"model": "flux-2-dev", "input": {"prompt": f"j{i}"}}
                    )
                    for i in range(start, start + 50)
                ]
                ids += [r.json()["job_id"] for r in await asyncio.gather(*batch)]
            kills = 0
            ended = time.monotonic() + STORM_S
            while time.monotonic() < ended:
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                kills += 1
                workers[victim] = group.start("worker", name=f"worker-{victim}")
            final = await _wait_all_terminal(client, set(ids), timeout=120)
    assert kills >= 5
    assert len(final) == JOBS  # every job terminal
    statuses = Counter(job["status"] for job in final.values())
    assert set(statuses) <= {"completed", "failed"}
    for job in final.values():
        if job["status"] == "failed":  # only an interrupted submit may fail, never silently
            assert job["error"]["code"] == "submit_outcome_unknown", job
    submitted = Counter(orjson.loads(line)["job_id"] for line in ledger.read_bytes().splitlines())
    attempts = {job_id: len(job["attempts"]) for job_id, job in final.items()}
    assert set(submitted) <= set(attempts)  # nothing paid that the gateway does not know of
    assert all(submitted[j] <= attempts[j] for j in submitted)  # at most one per attempt
    assert max(submitted.values()) == 1  # and here, never twice for one job
