"""All SQL of the dashboard: spend by day, provider, team and key; jobs by status; recent jobs.

Every query is bounded by job id as well as by time: job ids are ULIDs, so "created since T"
is a range scan of the primary key whatever the table's size (``id_floor``). Spend is counted
on the day a job finished (when the money was spent), in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement
from ulid import ULID

from app.models import ApiKey, Job, Output, Team


class utc_day(FunctionElement[str]):
    """``YYYY-MM-DD`` of a UTC timestamp column, on both engines."""

    type = String()
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _pg_day(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_day, "sqlite")
def _sqlite_day(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"  # naive UTC text


def id_floor(since: datetime) -> str:
    """The smallest job id a job created at or after ``since`` can have."""
    millis = max(0, int(since.timestamp() * 1000))
    return "img_" + str(ULID.from_bytes(millis.to_bytes(6, "big") + bytes(10)))


@dataclass(frozen=True, slots=True)
class SpendRow:
    key: str | None  # team id, key id or provider
    label: str
    detail: str
    micros: int
    jobs: int


@dataclass(frozen=True, slots=True)
class RecentRow:
    id: str
    status: str
    error_code: str | None
    provider: str | None
    model: str
    team: str
    prompt: str
    cost_micros: int | None
    estimated_micros: int | None
    created_at: datetime
    completed_at: datetime | None
    thumbnail_key: str | None


class DashboardRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _spent(self, since: datetime, created_after: datetime) -> list[ColumnElement[bool]]:
        return [
            Job.id >= id_floor(created_after),
            Job.completed_at >= since,
            Job.actual_cost_micros.is_not(None),
        ]

    async def spend_by_day(
        self, since: datetime, created_after: datetime
    ) -> dict[tuple[date, str], tuple[int, int]]:
        """(day, provider) -> (micro-dollars, jobs) of the jobs that finished since ``since``."""
        day = utc_day(Job.completed_at)
        query = (
            select(day, Job.provider, func.sum(Job.actual_cost_micros), func.count())
            .where(*self._spent(since, created_after))
            .group_by(day, Job.provider)
        )
        rows = (await self.session.execute(query)).all()
        return {
            (date.fromisoformat(d), provider or "unrouted"): (int(micros or 0), int(jobs))
            for d, provider, micros, jobs in rows
        }

    async def spend_by_team(
        self, since: datetime, created_after: datetime, limit: int
    ) -> list[SpendRow]:
        micros = func.sum(Job.actual_cost_micros)
        query = (
            select(Job.team_id, Team.name, micros, func.count())
            .join(Team, Team.id == Job.team_id)
            .where(*self._spent(since, created_after))
            .group_by(Job.team_id, Team.name)
            .order_by(micros.desc(), Team.name)
            .limit(limit)
        )
        rows = (await self.session.execute(query)).all()
        return [SpendRow(t, name, "", int(m or 0), int(n)) for t, name, m, n in rows]

    async def spend_by_key(
        self, since: datetime, created_after: datetime, limit: int
    ) -> list[SpendRow]:
        micros = func.sum(Job.actual_cost_micros)
        query = (
            select(Job.api_key_id, ApiKey.name, ApiKey.prefix, Team.name, micros, func.count())
            .join(Team, Team.id == Job.team_id)
            .outerjoin(ApiKey, ApiKey.id == Job.api_key_id)
            .where(*self._spent(since, created_after))
            .group_by(Job.api_key_id, ApiKey.name, ApiKey.prefix, Team.name)
            .order_by(micros.desc(), ApiKey.name)
            .limit(limit)
        )
        rows = (await self.session.execute(query)).all()
        return [
            SpendRow(
                key_id,
                name or "deleted key",
                f"{prefix}… · {team}" if prefix else team,
                int(m or 0),
                int(n),
            )
            for key_id, name, prefix, team, m, n in rows
        ]

    async def jobs_by_status(self, created_after: datetime) -> dict[str, int]:
        query = (
            select(Job.status, func.count())
            .where(Job.id >= id_floor(created_after), Job.created_at >= created_after)
            .group_by(Job.status)
        )
        return {status: int(n) for status, n in (await self.session.execute(query)).all()}

    async def images_stored(self, created_after: datetime) -> int:
        query = select(func.count()).where(
            Output.job_id >= id_floor(created_after), Output.deleted_at.is_(None)
        )
        return int((await self.session.execute(query)).scalar_one())

    async def recent_jobs(self, limit: int) -> list[RecentRow]:
        jobs = (
            await self.session.execute(
                select(Job, Team.name)
                .join(Team, Team.id == Job.team_id)
                .order_by(Job.id.desc())
                .limit(limit)
            )
        ).all()
        ids = [job.id for job, _ in jobs]
        thumbs: dict[str, str] = {}
        if ids:
            query = select(Output.job_id, Output.storage_key).where(
                Output.job_id.in_(ids), Output.index == 0, Output.deleted_at.is_(None)
            )
            rows = (await self.session.execute(query)).all()
            thumbs = {job_id: key for job_id, key in rows}  # noqa: C416 - typed unpacking
        return [
            RecentRow(
                id=job.id,
                status=job.status,
                error_code=job.error_code,
                provider=job.provider,
                model=job.model,
                team=team,
                prompt=str((job.input or {}).get("prompt", "")),
                cost_micros=job.actual_cost_micros,
                estimated_micros=job.estimated_cost_micros,
                created_at=job.created_at,
                completed_at=job.completed_at,
                thumbnail_key=thumbs.get(job.id),
            )
            for job, team in jobs
        ]
