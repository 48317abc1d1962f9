"""SQL of the retention sweep: outputs past their retention, and the jobs that show them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import db_now
from app.models import Job, Output


class RetentionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim_expired_outputs(self, *, older_than_s: float, limit: int) -> Sequence[Output]:
        """Live outputs older than ``older_than_s`` (by the database clock), locked for us."""
        query = (
            select(Output)
            .where(Output.deleted_at.is_(None), Output.created_at < db_now(-older_than_s))
            .order_by(Output.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(query)).scalars().all()

    async def mark_deleted(self, output_ids: Collection[int], when: datetime) -> None:
        await self.session.execute(
            update(Output)
            .where(Output.id.in_(list(output_ids)))
            .values(deleted_at=when)
            .execution_options(synchronize_session=False)
        )

    async def jobs_showing(self, job_ids: Collection[str]) -> Sequence[Job]:
        """The jobs whose result shows these jobs' files: themselves and jobs that reused them."""
        ids = list(job_ids)
        query = select(Job).where(or_(Job.id.in_(ids), Job.reused_from.in_(ids)))
        return (await self.session.execute(query)).scalars().all()
