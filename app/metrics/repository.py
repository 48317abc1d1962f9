"""All SQL of the metrics feature: the jobs in flight, counted at scrape time."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.states import ALL_STATES
from app.models import Job

# Every stage but `done`: an IN list keeps the (stage, next_action_at) index usable.
ACTIVE_STAGES = sorted({s.stage.value for s in ALL_STATES if not s.is_terminal})


class MetricsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def jobs_in_flight(self) -> list[tuple[str, str, str | None, int]]:
        """(status, stage, provider, count) of every job not yet terminal."""
        query = (
            select(Job.status, Job.stage, Job.provider, func.count())
            .where(Job.stage.in_(ACTIVE_STAGES))
            .group_by(Job.status, Job.stage, Job.provider)
        )
        rows = await self.session.execute(query)
        return [(status, stage, provider, int(n)) for status, stage, provider, n in rows.all()]
