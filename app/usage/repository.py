"""All SQL of usage reports: one aggregate over the jobs of a range, grouped by any dimensions.

Each job is first reduced to one row (its dimensions, status, costs, and its outputs' count and
pixels through correlated subqueries on the ``outputs`` (job_id, index) index), then the rows are
aggregated, so a job with several images is never counted twice. Completion-time percentiles are
``percentile_cont`` on PostgreSQL; SQLite has no such aggregate, so there ``durations`` returns
the raw durations and the service applies the same interpolation in Python (``app.usage.stats``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, RowMapping, case, cast, extract, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.states import Status
from app.models import ApiKey, Job, Output, Team
from app.usage.schemas import GroupBy, UsageQuery

GroupKey = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class GroupRow:
    key: GroupKey  # one value per ``group_by`` dimension, in order
    counts: dict[str, int]  # by status
    images: int
    pixels: int
    estimated_micros: int
    actual_micros: int
    unpriced: int
    p50_s: float | None = None
    p95_s: float | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def percentiles_in_sql(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def _dimension(self, group: GroupBy) -> ColumnElement[Any]:
        if group is GroupBy.DAY:
            if self.percentiles_in_sql:
                return func.to_char(func.timezone("UTC", Job.created_at), "YYYY-MM-DD")
            return func.strftime("%Y-%m-%d", Job.created_at)  # stored as naive UTC text
        column = {
            GroupBy.PROVIDER: Job.provider,
            GroupBy.MODEL: Job.model,
            GroupBy.TEAM: Job.team_id,
            GroupBy.KEY: Job.api_key_id,
        }[group]
        return column.expression

    def _where(self, query: UsageQuery) -> list[ColumnElement[bool]]:
        where = [Job.created_at >= query.start, Job.created_at < query.end]
        if query.team_id is not None:
            where.append(Job.team_id == query.team_id)
        return where

    async def aggregate(self, query: UsageQuery) -> list[GroupRow]:
        dims = [self._dimension(g).label(f"g{i}") for i, g in enumerate(query.group_by)]
        images = select(func.count()).where(Output.job_id == Job.id).scalar_subquery()
        pixels = (
            select(func.coalesce(func.sum(Output.width * Output.height), 0))
            .where(Output.job_id == Job.id)
            .scalar_subquery()
        )
        columns: list[Any] = [
            *dims,
            Job.status.label("status"),
            Job.estimated_cost_micros.label("estimated"),
            Job.actual_cost_micros.label("actual"),
            images.label("images"),
            pixels.label("pixels"),
        ]
        if self.percentiles_in_sql:
            seconds = cast(extract("epoch", Job.completed_at - Job.created_at), Float)
            completed = Job.status == Status.COMPLETED.value
            columns.append(case((completed, seconds), else_=None).label("duration"))
        per_job = select(*columns).where(*self._where(query)).subquery()
        keys = [per_job.c[f"g{i}"] for i in range(len(dims))]
        aggregates: list[Any] = [
            *(
                func.count(case((per_job.c.status == status.value, 1))).label(status.value)
                for status in Status
            ),
            func.coalesce(func.sum(per_job.c.images), 0).label("images"),
            func.coalesce(func.sum(per_job.c.pixels), 0).label("pixels"),
            func.coalesce(func.sum(per_job.c.estimated), 0).label("estimated"),
            func.coalesce(func.sum(per_job.c.actual), 0).label("actual"),
            func.count(case((per_job.c.estimated.is_(None), 1))).label("unpriced"),
        ]
        if self.percentiles_in_sql:
            aggregates += [
                func.percentile_cont(0.5).within_group(per_job.c.duration).label("p50"),
                func.percentile_cont(0.95).within_group(per_job.c.duration).label("p95"),
            ]
        statement = select(*keys, *aggregates).group_by(*keys)
        rows = (await self.session.execute(statement)).all()
        return [self._row(row._mapping, len(keys)) for row in rows]

    @staticmethod
    def _row(row: RowMapping, width: int) -> GroupRow:
        def seconds(name: str) -> float | None:
            value = row.get(name)
            return None if value is None else float(value)

        return GroupRow(
            key=tuple(None if row[f"g{i}"] is None else str(row[f"g{i}"]) for i in range(width)),
            counts={status.value: int(row[status.value]) for status in Status},
            images=int(row["images"]),
            pixels=int(row["pixels"]),
            estimated_micros=int(row["estimated"]),
            actual_micros=int(row["actual"]),
            unpriced=int(row["unpriced"]),
            p50_s=seconds("p50"),
            p95_s=seconds("p95"),
        )

    async def durations(self, query: UsageQuery) -> dict[GroupKey, list[float]]:
        """Seconds from creation to completion of each completed job, by group."""
        dims = [self._dimension(g) for g in query.group_by]
        statement = select(*dims, Job.created_at, Job.completed_at).where(
            *self._where(query),
            Job.status == Status.COMPLETED.value,
            Job.completed_at.is_not(None),
        )
        out: dict[GroupKey, list[float]] = {}
        width = len(dims)
        for row in (await self.session.execute(statement)).all():
            key = tuple(None if v is None else str(v) for v in row[:width])
            created, completed = row[width], row[width + 1]
            out.setdefault(key, []).append((completed - created).total_seconds())
        return out

    async def team_names(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = await self.session.execute(select(Team.id, Team.name).where(Team.id.in_(wanted)))
        return {str(team_id): str(name) for team_id, name in rows.all()}

    async def key_names(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = await self.session.execute(
            select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(wanted))
        )
        return {str(key_id): str(name) for key_id, name in rows.all()}
