"""``Idempotency-Key`` (IETF draft semantics): one job per key and body, whatever the concurrency.

Keys are scoped to the API key, a repeat answers with the original job (no new submission, no
new reservation), another body is a 422, and keys never expire on their own (at least the 24 h
the contract promises: the unique constraint lives as long as the job row).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import orjson
from sqlalchemy import func, select, update

from app.kit.timeutil import utcnow
from app.models import Job, LedgerEntry
from tests.conftest import Backend
from tests.delivery.conftest import running
from tests.helpers import body, new_key


async def test_20_concurrent_creates_make_one_job_one_submission_one_reservation(
    isolated: Backend, tmp_path: Path
) -> None:
    ledger = tmp_path / "simulator-ledger.jsonl"
    simulator = {"latency_s": 0.05, "latency_jitter": 0.0, "ledger_path": str(ledger)}
    async with running(isolated, tmp_path, simulator=simulator) as gateway:
        team = f"idem-{tmp_path.name}"
        client = gateway.client(await new_key(gateway.runtime, team=team))
        payload = body("one fox, however often asked")
        headers = {"Idempotency-Key": "order-42"}
        answers = await asyncio.gather(*(client.create(payload, **headers) for _ in range(20)))
        assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
        job_ids = {a.json()["job_id"] for a in answers}
        assert len(job_ids) == 1
        [job_id] = job_ids
        assert (await client.wait(job_id))["status"] == "completed"

        submissions = [orjson.loads(line) for line in ledger.read_bytes().splitlines()]
        assert [s["job_id"] for s in submissions] == [job_id]
        async with gateway.runtime.sessions() as session:
            reserves = await session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "reserve")
            )
            jobs = await session.scalar(
                select(func.count()).select_from(Job).where(Job.idempotency_key == "order-42")
            )
        assert (reserves, jobs) == (1, 1)

        # The same key with another body: 422 naming the header, nothing created.
        other = await client.create(body("another fox"), **headers)
        assert other.status_code == 422
        problem = other.json()
        assert problem["code"] == "idempotency_key_reused"
        assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]

        # The same key under another API key (even of the same team) is another job.
        sibling = gateway.client(await new_key(gateway.runtime, team=team))
        separate = await sibling.create(payload, **headers)
        assert separate.status_code == 202 and separate.json()["job_id"] != job_id
        await sibling.wait(separate.json()["job_id"])

        # A repeat a day and more later still answers with the original job.
        async with gateway.runtime.sessions() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(created_at=utcnow() - timedelta(hours=25))
            )
            await session.commit()
        later = await client.create(payload, **headers)
        assert later.status_code == 202 and later.json()["job_id"] == job_id
        assert later.json()["status"] == "completed"
        assert len(ledger.read_bytes().splitlines()) == 2  # the sibling's job only
