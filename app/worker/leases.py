"""Claiming due jobs under a lease, and releasing or reaping leases. SQL only.

A claim bumps ``lease_epoch``; every later write by the claimer names that epoch, so a worker
whose lease expired and was taken over changes nothing (its updates match zero rows).
On PostgreSQL the claim skips rows other workers have locked (``FOR UPDATE SKIP LOCKED``);
SQLite serialises writers, which gives the same exclusivity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import db_now
from app.jobs.states import Stage
from app.models import Job

ACTIVE_STAGES = (
    Stage.QUEUED,
    Stage.SUBMITTING,
    Stage.UPSTREAM_QUEUED,
    Stage.RUNNING,
    Stage.FINALIZING,
)


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    epoch: int
    stage: Stage
    lag_s: float | None = field(default=None, compare=False)  # due -> claimed, for metrics


async def claim_due(
    session: AsyncSession,
    owner: str,
    *,
    limit: int,
    lease_s: float,
    stages: Sequence[Stage] = ACTIVE_STAGES,
) -> list[Claim]:
    due = (
        select(Job.id)
        .where(
            Job.stage.in_([s.value for s in stages]),
            Job.next_action_at <= db_now(),
            Job.lease_owner.is_(None),
        )
        .order_by(Job.next_action_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = await session.execute(
        update(Job)
        .where(Job.id.in_(due.scalar_subquery()))
        .values(
            lease_owner=owner,
            lease_expires_at=db_now(lease_s),
            lease_epoch=Job.lease_epoch + 1,
        )
        .returning(Job.id, Job.lease_epoch, Job.stage, Job.next_action_at, db_now())
        .execution_options(synchronize_session=False)
    )
    return [
        Claim(job_id, epoch, Stage(stage), _lag(due_at, now))
        for job_id, epoch, stage, due_at, now in claimed.all()
    ]


def _lag(due_at: datetime | None, now: datetime | None) -> float | None:
    """Seconds from due to claimed, both by the database clock (the poll-lag metric)."""
    if due_at is None or now is None:
        return None
    return max(0.0, (now - due_at).total_seconds())


async def release(
    session: AsyncSession,
    claim: Claim,
    *,
    next_action_in: float,
    values: dict[str, Any] | None = None,
) -> bool:
    """Give the job back, due again in ``next_action_in`` seconds; False if fenced out."""
    result = await session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.lease_epoch == claim.epoch)
        .values(
            {
                **(values or {}),
                "lease_owner": None,
                "lease_expires_at": None,
                "next_action_at": db_now(next_action_in),
            }
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none() is not None


async def extend_leases(
    session: AsyncSession, owner: str, job_ids: Sequence[str], *, lease_s: float
) -> int:
    """Push back the expiry of the leases ``owner`` still holds on ``job_ids`` (a heartbeat).

    Only a lease whose owner is still us is extended, so a fenced lease stays lost; extending
    grants no write (writes are checked by epoch), it only keeps a live step's job from being
    reaped while it runs longer than one lease.
    """
    if not job_ids:
        return 0
    result = await session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.lease_owner == owner)
        .values(lease_expires_at=db_now(lease_s))
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.scalars().all())


async def reap_expired(session: AsyncSession, *, submitting_grace_s: float) -> list[str]:
    """Free every expired lease in one sweep (by the database clock) and fence its holder.

    A job whose dispatcher died mid-submit may have been accepted upstream: it is not retried,
    it waits ``submitting_grace_s`` for an upstream webhook to adopt it, then fails.
    """
    reaped: list[str] = []
    for stage_filter, due_in in (
        (Job.stage == Stage.SUBMITTING.value, submitting_grace_s),
        (Job.stage != Stage.SUBMITTING.value, 0.0),
    ):
        result = await session.execute(
            update(Job)
            .where(Job.lease_expires_at < db_now(), stage_filter)
            .values(
                lease_owner=None,
                lease_expires_at=None,
                lease_epoch=Job.lease_epoch + 1,
                next_action_at=db_now(due_in),
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        reaped.extend(result.scalars().all())
    return reaped


async def claim_job(
    session: AsyncSession, job_id: str, owner: str, *, lease_s: float
) -> Claim | None:
    """Lease one specific job now (an inbound webhook applying a verified state)."""
    claimed = await session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.lease_owner.is_(None),
            Job.stage.in_([s.value for s in ACTIVE_STAGES]),
        )
        .values(
            lease_owner=owner,
            lease_expires_at=db_now(lease_s),
            lease_epoch=Job.lease_epoch + 1,
        )
        .returning(Job.id, Job.lease_epoch, Job.stage)
        .execution_options(synchronize_session=False)
    )
    row = claimed.first()
    return None if row is None else Claim(row[0], row[1], Stage(row[2]))


async def reclaim_submitting(
    session: AsyncSession, job_id: str, owner: str, *, lease_s: float
) -> Claim | None:
    """Lease again a job still in ``submitting`` that nobody holds.

    For a dispatcher that lost its lease mid-submit (it ran out while the database was away and
    the reaper fenced it) and has the upstream's answer in hand. Whoever decides a job in
    ``submitting`` holds its lease (this, the reconcile step, an adopting webhook), so the lease
    serialises them: the first to take it decides, the others find the job moved on.
    """
    claimed = await session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.lease_owner.is_(None),
            Job.stage == Stage.SUBMITTING.value,
        )
        .values(
            lease_owner=owner,
            lease_expires_at=db_now(lease_s),
            lease_epoch=Job.lease_epoch + 1,
        )
        .returning(Job.id, Job.lease_epoch)
        .execution_options(synchronize_session=False)
    )
    row = claimed.first()
    return None if row is None else Claim(row[0], row[1], Stage.SUBMITTING)


async def poll_soon(session: AsyncSession, job_id: str) -> bool:
    """Make a tracked job due now, unless a poll is already due (so a hint polls once)."""
    result = await session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.lease_owner.is_(None),
            Job.stage.in_([Stage.UPSTREAM_QUEUED.value, Stage.RUNNING.value]),
            Job.next_action_at > db_now(),
        )
        .values(next_action_at=db_now())
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none() is not None


async def release_after_failure(
    session: AsyncSession, claim: Claim, *, submitting_grace_s: float
) -> bool:
    """A step crashed (e.g. the database blipped): hand the job back soon instead of waiting
    for its lease to expire. A job left in ``submitting`` waits out the grace, as after a crash.
    """
    result = await session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.lease_epoch == claim.epoch)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            next_action_at=case(
                (Job.stage == Stage.SUBMITTING.value, db_now(submitting_grace_s)),
                else_=db_now(1.0),
            ),
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none() is not None
