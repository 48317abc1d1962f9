"""Claims, leases, fencing and the reaper, on SQLite and PostgreSQL (the database's clock)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select, text, update

from app.db import db_now
from app.jobs import states
from app.jobs.repository import JobRepository
from app.models import Job
from app.worker.leases import Claim, claim_due, extend_leases, reap_expired, release
from tests.worker.conftest import Store, add_due_jobs


async def test_ten_concurrent_claimers_claim_each_of_2000_jobs_once(store: Store) -> None:
    ids = await add_due_jobs(store, 2000)
    claims: list[Claim] = []

    async def claimer(name: str) -> None:
        while True:
            async with store.sessions() as session:
                batch = await claim_due(session, name, limit=25, lease_s=60)
                await session.commit()
            if not batch:
                return
            claims.extend(batch)

    await asyncio.gather(*(claimer(f"w{i}") for i in range(10)))
    counts = Counter(c.job_id for c in claims)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert all(c.epoch == 1 for c in claims)


async def test_a_worker_whose_lease_was_taken_over_cannot_write(store: Store) -> None:
    [job_id] = await add_due_jobs(store, 1)
    async with store.sessions() as session:
        [first] = await claim_due(session, "A", limit=1, lease_s=60)
        await session.commit()
    # A's lease runs out (back-dated in SQL); the reaper frees it; B claims the job.
    async with store.sessions() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=db_now(-1))
        )
        assert await reap_expired(session, submitting_grace_s=0) == [job_id]
        await session.commit()
    async with store.sessions() as session:
        [second] = await claim_due(session, "B", limit=1, lease_s=60)
        await session.commit()
    assert second.epoch > first.epoch
    # A wakes up and tries to write with its old epoch: zero rows change.
    async with store.sessions() as session:
        repo = JobRepository(session)
        moved = await repo.transition(
            job_id, states.QUEUED, states.SUBMITTING, epoch=first.epoch, values={"provider": "A"}
        )
        released = await release(session, first, next_action_in=0)
        await session.commit()
    assert not moved and not released
    # B's writes go through.
    async with store.sessions() as session:
        repo = JobRepository(session)
        assert await repo.transition(
            job_id, states.QUEUED, states.SUBMITTING, epoch=second.epoch, values={"provider": "B"}
        )
        await session.commit()
        job = await repo.get(job_id)
    assert job is not None and job.provider == "B" and job.stage == "submitting"


async def test_reaper_reclaims_a_back_dated_lease_in_one_sweep_and_spares_fresh_ones(
    store: Store,
) -> None:
    ids = await add_due_jobs(store, 3)
    async with store.sessions() as session:
        claimed = await claim_due(session, "A", limit=3, lease_s=60)
        await session.commit()
    assert len(claimed) == 3
    stale = ids[0]
    async with store.sessions() as session:
        await session.execute(
            update(Job).where(Job.id == stale).values(lease_expires_at=db_now(-5))
        )
        reaped = await reap_expired(session, submitting_grace_s=0)
        await session.commit()
    assert reaped == [stale]
    async with store.sessions() as session:
        rows = {
            j.id: j for j in (await session.execute(select(Job).where(Job.id.in_(ids)))).scalars()
        }
        # Reclaimable at once, fenced (epoch bumped), the fresh leases untouched.
        again = await claim_due(session, "B", limit=10, lease_s=60)
        await session.commit()
    assert rows[stale].lease_owner is None and rows[stale].lease_epoch == 2
    assert all(rows[i].lease_owner == "A" for i in ids[1:])
    assert [c.job_id for c in again] == [stale]


async def test_a_job_whose_submit_was_interrupted_waits_out_the_grace_before_reconciling(
    store: Store,
) -> None:
    [job_id] = await add_due_jobs(store, 1, stage="submitting")
    async with store.sessions() as session:
        [claim] = await claim_due(session, "A", limit=1, lease_s=60)
        await session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=db_now(-1))
        )
        assert await reap_expired(session, submitting_grace_s=600) == [job_id]
        await session.commit()
    async with store.sessions() as session:
        # Not due again until the grace period has passed: no second submit, no reconcile yet.
        assert await claim_due(session, "B", limit=1, lease_s=60) == []
    assert claim.stage is states.Stage.SUBMITTING


async def test_each_lease_lasts_as_long_as_asked_on_one_engine(store: Store) -> None:
    """``db_now(offset)`` renders its offset into the SQL: the statement cache must tell two
    offsets apart, or every lease and due time reuses the first one compiled."""
    await add_due_jobs(store, 2)
    for lease_s in (600, 5):
        async with store.sessions() as session:
            await claim_due(session, f"w{lease_s}", limit=1, lease_s=lease_s)
            await session.commit()
    async with store.sessions() as session:
        horizon = db_now(60)
        rows = await session.execute(select(Job.lease_owner, Job.lease_expires_at < horizon))
    assert {owner: bool(short) for owner, short in rows.all()} == {"w600": False, "w5": True}


async def test_a_heartbeat_extends_only_the_leases_its_owner_still_holds(store: Store) -> None:
    kept, lost = await add_due_jobs(store, 2)
    async with store.sessions() as session:
        claims = await claim_due(session, "A", limit=2, lease_s=60)
        await session.commit()
    assert {c.job_id for c in claims} == {kept, lost}
    # A stalls: both leases run out; the reaper frees `lost` and B takes it.
    async with store.sessions() as session:
        await session.execute(update(Job).values(lease_expires_at=db_now(-1)))
        await session.commit()
    async with store.sessions() as session:
        await session.execute(update(Job).where(Job.id == kept).values(lease_expires_at=db_now(1)))
        assert await reap_expired(session, submitting_grace_s=0) == [lost]
        [taken] = await claim_due(session, "B", limit=1, lease_s=5)
        await session.commit()
    assert taken.job_id == lost
    async with store.sessions() as session:
        assert await extend_leases(session, "A", [kept, lost], lease_s=60) == 1
        await session.commit()
        rows = {j.id: j for j in (await session.execute(select(Job))).scalars()}
        horizon = await session.scalar(select(db_now(30)))
    assert rows[lost].lease_owner == "B" and rows[lost].lease_expires_at < horizon
    assert rows[kept].lease_owner == "A" and rows[kept].lease_expires_at > horizon
    async with store.sessions() as session:
        # A's extended lease survives a sweep that would have reaped it a moment ago.
        await asyncio.sleep(1.1)
        assert await reap_expired(session, submitting_grace_s=0) == []


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_claim_query_uses_its_index_at_ten_thousand_rows(store: Store) -> None:
    await add_due_jobs(store, 10_000, stage="running")
    async with store.sessions() as session:
        await session.execute(text("ANALYZE jobs"))
        plan = await session.execute(
            text(
                "EXPLAIN SELECT id FROM jobs WHERE stage IN ('queued', 'upstream_queued') "
                "AND next_action_at <= clock_timestamp() AND lease_owner IS NULL "
                "ORDER BY next_action_at LIMIT 50 FOR UPDATE SKIP LOCKED"
            )
        )
        lines = "\n".join(row[0] for row in plan)
    assert "ix_jobs_stage_next_action_at" in lines, lines
