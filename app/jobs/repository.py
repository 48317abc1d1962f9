"""All SQL on jobs, attempts and job events. Callers own the transaction (the edge commits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import db_now
from app.jobs.states import JobState, check_transition
from app.jobs.transitions import Transition, on_transition
from app.kit.timeutil import utcnow
from app.models import Attempt, Job, JobEvent


@dataclass(frozen=True, slots=True)
class JobFilters:
    status: str | None = None
    provider: str | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, job: Job, detail: dict[str, Any] | None = None) -> None:
        job.event_seq = 1
        # Due "now" by the database clock, which every worker compares against.
        job.next_action_at = cast(Any, db_now())
        self.session.add(job)
        self.session.add(
            JobEvent(job_id=job.id, seq=1, status=job.status, stage=job.stage, detail=detail)
        )

    async def get(self, job_id: str, team_id: str | None = None) -> Job | None:
        query = select(Job).where(Job.id == job_id)
        if team_id is not None:
            query = query.where(Job.team_id == team_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def get_by_idempotency_key(self, api_key_id: str, key: str) -> Job | None:
        query = select(Job).where(Job.api_key_id == api_key_id, Job.idempotency_key == key)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def attempts(self, job_id: str) -> Sequence[Attempt]:
        query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)
        return (await self.session.execute(query)).scalars().all()

    async def attempts_for(self, job_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {job_id: [] for job_id in job_ids}
        if job_ids:
            query = select(Attempt).where(Attempt.job_id.in_(job_ids)).order_by(Attempt.id)
            for attempt in (await self.session.execute(query)).scalars():
                out[attempt.job_id].append(attempt)
        return out

    async def list(
        self, team_id: str | None, filters: JobFilters, limit: int, before_id: str | None
    ) -> Sequence[Job]:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if team_id is not None:
            query = query.where(Job.team_id == team_id)
        if before_id is not None:
            query = query.where(Job.id < before_id)
        if filters.status is not None:
            query = query.where(Job.status == filters.status)
        if filters.provider is not None:
            query = query.where(Job.provider == filters.provider)
        if filters.model is not None:
            query = query.where(Job.model == filters.model)
        if filters.created_after is not None:
            query = query.where(Job.created_at >= filters.created_after)
        if filters.created_before is not None:
            query = query.where(Job.created_at < filters.created_before)
        return (await self.session.execute(query)).scalars().all()

    async def transition(
        self,
        job_id: str,
        current: JobState,
        target: JobState,
        *,
        epoch: int | None,
        values: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        next_action_in: float | None = None,
    ) -> bool:
        """Move a job if it is still in ``current`` (and, for workers, still under ``epoch``).

        Returns False when zero rows matched: someone else moved the job or took the lease.
        """
        check_transition(current, target)
        now = utcnow()
        changes: dict[str, Any] = {
            "status": target.status.value,
            "stage": target.stage.value,
            "updated_at": now,
            "event_seq": Job.event_seq + 1,
            **(values or {}),
        }
        if target.is_terminal:
            changes.update(next_action_at=None, lease_owner=None, lease_expires_at=None)
            changes.setdefault("completed_at", now)
        elif next_action_in is not None:
            changes["next_action_at"] = db_now(next_action_in)
        query = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == current.status.value,
                Job.stage == current.stage.value,
            )
            .values(changes)
            .returning(Job)
            .execution_options(populate_existing=True)
        )
        if epoch is not None:
            query = query.where(Job.lease_epoch == epoch)
        job = (await self.session.execute(query)).scalar_one_or_none()
        if job is None:
            return False
        self.session.add(
            JobEvent(
                job_id=job_id,
                seq=job.event_seq,
                status=target.status.value,
                stage=target.stage.value,
                detail=detail,
            )
        )
        await on_transition(self.session, Transition(job, current, target))
        return True

    async def completed_by_reuse_key(
        self, team_id: str, reuse_key: str, limit: int = 5
    ) -> Sequence[Job]:
        """The team's newest completed jobs with this reuse key (result reuse)."""
        query = (
            select(Job)
            .where(Job.team_id == team_id, Job.reuse_key == reuse_key, Job.status == "completed")
            .order_by(Job.id.desc())
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def events_after(self, job_id: str, seq: int, limit: int = 100) -> Sequence[JobEvent]:
        """A job's transitions after ``seq``, in order (the SSE stream's source)."""
        query = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def count_by_status(self) -> dict[str, int]:
        query = select(Job.status, func.count()).group_by(Job.status)
        rows = (await self.session.execute(query)).all()
        return {status: int(count) for status, count in rows}
