"""All SQL of routing: the attempts behind the observed statistics, and the jobs in flight."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.states import AT_UPSTREAM
from app.models import Attempt, Job
from app.routing.stats import AttemptRow


class RoutingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def recent_attempts(self, since: datetime, limit: int) -> list[AttemptRow]:
        """Attempts that finished since ``since``, among the newest ``limit`` submitted.

        Bounding by the newest ids walks the primary key backwards, so the cost stays the same
        however large the table grows (attempts have no index on their finish time).
        """
        newest = (
            select(
                Attempt.job_id,
                Attempt.provider,
                Attempt.state,
                Attempt.error_code,
                Attempt.submitted_at,
                Attempt.finished_at,
            )
            .order_by(Attempt.id.desc())
            .limit(limit)
            .subquery()
        )
        query = (
            select(
                newest.c.provider,
                Job.model,
                newest.c.state,
                newest.c.error_code,
                newest.c.submitted_at,
                newest.c.finished_at,
            )
            .join(Job, Job.id == newest.c.job_id)
            .where(newest.c.finished_at >= since)
        )
        rows = await self.session.execute(query)
        return [AttemptRow(*row) for row in rows.all()]

    async def in_flight(self) -> dict[tuple[str, str], int]:
        """Jobs at an upstream right now, by provider and model."""
        query = (
            select(Job.provider, Job.model, func.count())
            .where(Job.stage.in_([s.stage.value for s in AT_UPSTREAM]), Job.provider.is_not(None))
            .group_by(Job.provider, Job.model)
        )
        rows = await self.session.execute(query)
        return {(str(provider), model): int(count) for provider, model, count in rows.all()}
