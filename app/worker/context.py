"""What every worker step shares: loading a claimed job, its live attempt, and ending a job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs import states
from app.jobs.repository import JobRepository
from app.kit.timeutil import utcnow
from app.models import Attempt, Job
from app.providers.base import ErrorCode
from app.runtime import Runtime
from app.worker.leases import Claim

log = structlog.get_logger("imagegate.worker")

MAX_ATTEMPTS = 3


@dataclass
class Claimed:
    """A claimed job as read inside the step's transaction."""

    job: Job
    attempt: Attempt | None  # the latest attempt, if any
    repo: JobRepository

    @property
    def state(self) -> states.JobState:
        return states.state_of(self.job.status, self.job.stage)


async def load(session: AsyncSession, claim: Claim) -> Claimed | None:
    """The job if we still hold its lease, else None (someone took over: do nothing)."""
    repo = JobRepository(session)
    job = await repo.get(claim.job_id)
    if job is None or job.lease_epoch != claim.epoch or job.stage != claim.stage:
        return None
    query = select(Attempt).where(Attempt.job_id == job.id).order_by(Attempt.id.desc()).limit(1)
    attempt = (await session.execute(query)).scalar_one_or_none()
    return Claimed(job, attempt, repo)


def next_candidate(job: Job) -> dict[str, Any] | None:
    """The next route-plan entry not yet tried, within the attempt budget."""
    if job.attempt_count >= MAX_ATTEMPTS or job.attempt_count >= len(job.route_plan):
        return None
    return job.route_plan[job.attempt_count]


def finish_attempt(attempt: Attempt, state: str, code: str | None, message: str | None) -> None:
    attempt.state = state
    attempt.finished_at = utcnow()
    attempt.error_code = code
    attempt.error_message = message


async def fail_job(
    claimed: Claimed,
    claim: Claim,
    code: ErrorCode,
    message: str,
    provider: str | None = None,
) -> bool:
    log.info("job failed", job_id=claimed.job.id, code=code.value, reason=message)
    return await claimed.repo.transition(
        claimed.job.id,
        claimed.state,
        states.FAILED,
        epoch=claim.epoch,
        values={"error_code": code.value, "error_message": message, "error_provider": provider},
        detail={"code": code.value, "message": message, "provider": provider},
    )


async def after_commit(runtime: Runtime, job_id: str, *, wake: bool = False) -> None:
    """Refresh the job's cached document and wake workers; best effort, it never raises.

    The state is already committed, and a step must go on from here: a dispatch that raised
    after committing ``submitting`` would strand a job that was never sent. A missed publish is
    bounded by the live-job cache TTL; a missed wake by the workers' idle interval.
    """
    from app.jobs.publish import publish_by_id

    try:
        await publish_by_id(runtime, job_id)
        if wake:
            await runtime.signals.notify("wake")
    except Exception as exc:
        log.warning("publishing a job change failed", job_id=job_id, error=type(exc).__name__)
