"""Distributed shape: one API and two worker processes on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from app.setup import migrate
from tests.conftest import SECRET
from tests.procs import processes

JOBS = 500


@pytest.mark.slow
async def test_two_workers_and_one_api_complete_500_jobs_each_submitted_once(
    fresh_pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, fresh_pg_url)
    ledger = tmp_path / "simulator-ledger.jsonl"
    env = {
        "IMAGEGATE_DATABASE_URL": fresh_pg_url,
        "IMAGEGATE_REDIS_URL": redis_url,
        "IMAGEGATE_REDIS_PREFIX": f"igmp:{tmp_path.name}:",
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_LOG_LEVEL": "warning",
        "IMAGEGATE_SIMULATOR__LATENCY_S": "0.3",
        "IMAGEGATE_SIMULATOR__LEDGER_PATH": str(ledger),
        "IMAGEGATE_SIMULATOR__ENABLED": "true",
    }
    with processes(env, tmp_path) as group:
        key = group.run("keys", "create", "--team", "load")
        group.start("worker", name="worker-1")
        group.start("worker", name="worker-2")
        url = group.api()
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            semaphore = asyncio.Semaphore(16)

            async def create(i: int) -> str:
                async with semaphore:
                    body = {"model": "flux-2-dev", "input": {"prompt": f"job {i}"}}
                    response = await client.post("/v1/images", json=body)
                    assert response.status_code == 202, response.text
                    return str(response.json()["job_id"])

            ids = await asyncio.gather(*(create(i) for i in range(JOBS)))
            final = await _wait_all_terminal(client, set(ids), timeout=180)
        assert Counter(job["status"] for job in final.values()) == {"completed": JOBS}, (
            group.log_tail("worker-1") + group.log_tail("worker-2")
        )
        assert all(len(job["attempts"]) == 1 for job in final.values())
    entries = [orjson.loads(line) for line in ledger.read_bytes().splitlines()]
    submitted = Counter(entry["job_id"] for entry in entries)
    assert set(submitted) == set(ids)
    assert max(submitted.values()) == 1  # each simulated submission recorded once
    recorded = {job["attempts"][0]["upstream_id"] for job in final.values()}
    assert recorded == {entry["upstream_id"] for entry in entries}


async def _wait_all_terminal(
    client: httpx.AsyncClient, ids: set[str], timeout: float
) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, object]] = {}
    stuck: Counter[str] = Counter()
    while time.monotonic() < deadline:
        pending = sorted(ids - set(final))
        if not pending:
            return final
        stuck.clear()
        for job_id in pending[:100]:
            job = (await client.get(f"/v1/images/{job_id}")).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                final[job_id] = job
            else:
                stuck[str(job["stage"])] += 1
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(ids) - len(final)} jobs not terminal after {timeout}s: {stuck}")
