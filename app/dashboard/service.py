"""Assembling the dashboard: who is looking, and every panel's figures for a period."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import AuthRepository
from app.dashboard.charts import donut, provider_colors, stacked_days
from app.dashboard.repository import DashboardRepository, SpendRow
from app.dashboard.schemas import (
    Dashboard,
    Kpis,
    ProviderRow,
    RecentJob,
    ShareRow,
    StatusRow,
    Viewer,
)
from app.kit.timeutil import utcnow
from app.metrics.repository import MetricsRepository
from app.routing.pricing import estimate
from app.runtime import Runtime

TOP_ROWS = 8
RECENT_JOBS = 12
STATUS_ORDER = ("completed", "failed", "cancelled", "processing", "pending")


async def viewer_for(session: AsyncSession, key_id: str) -> Viewer | None:
    """The admin behind a session, if their key still exists, is live and is still admin."""
    repo = AuthRepository(session)
    key = await repo.key(key_id)
    now = utcnow()
    if key is None or key.revoked_at is not None or "admin" not in (key.scopes or []):
        return None
    if key.expires_at is not None and key.expires_at <= now:
        return None
    team = await repo.team(key.team_id)
    return Viewer(key.id, key.name, key.prefix, team.name if team is not None else key.team_id)


def period_start(days: int, now: datetime) -> date:
    return (now.astimezone(UTC) - timedelta(days=days - 1)).date()


async def build_dashboard(runtime: Runtime, viewer: Viewer, days: int) -> Dashboard:
    now = utcnow()
    first_day = period_start(days, now)
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    # A job finishing in the period was created at most its deadline before (plus slack).
    created_after = since - timedelta(seconds=runtime.settings.job_deadline_s + 3600)
    # Health first, outside our transaction: on SQLite its query needs a connection of its own.
    health = await _health(runtime)
    async with runtime.sessions() as session:
        repo = DashboardRepository(session)
        spend = await repo.spend_by_day(since, created_after)
        statuses = await repo.jobs_by_status(since)
        in_flight = sum(n for *_, n in await MetricsRepository(session).jobs_in_flight())
        images = await repo.images_stored(since)
        teams = await repo.spend_by_team(since, created_after, TOP_ROWS)
        keys = await repo.spend_by_key(since, created_after, TOP_ROWS)
        recent = await repo.recent_jobs(RECENT_JOBS)
    names = sorted(set(runtime.providers) | {provider for _, provider in spend})
    colors = provider_colors(names)
    day_list = [first_day + timedelta(days=i) for i in range((now.date() - first_day).days + 1)]
    spend_by_provider = {p: sum(m for (_, q), (m, _) in spend.items() if q == p) for p in names}
    status_rows = _statuses(statuses)
    return Dashboard(
        viewer=viewer,
        days=days,
        since=first_day,
        generated_at=now,
        kpis=Kpis(
            spend_micros=sum(m for m, _ in spend.values()),
            priced_jobs=sum(n for _, n in spend.values()),
            completed=statuses.get("completed", 0),
            failed=statuses.get("failed", 0),
            cancelled=statuses.get("cancelled", 0),
            in_flight=in_flight,
            images=images,
        ),
        chart=stacked_days(day_list, spend, colors),
        statuses=status_rows,
        status_ring=donut([(row.status, row.count) for row in status_rows]),
        teams=_shares(teams),
        keys=_shares(keys),
        providers=tuple(
            replace(row, color=colors[row.name], spend_micros=spend_by_provider.get(row.name, 0))
            for row in health
        ),
        health_window_s=runtime.health.settings.stats_window_s,
        recent=tuple(
            RecentJob(
                row,
                runtime.signer.sign(row.thumbnail_key) if row.thumbnail_key else None,
                colors.get(row.provider or "", "#8a94a6"),
            )
            for row in recent
        ),
    )


def _statuses(counts: dict[str, int]) -> tuple[StatusRow, ...]:
    total = sum(counts.values())
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))
    return tuple(StatusRow(s, counts[s], counts[s] / total if total else 0.0) for s in order)


def _shares(rows: Sequence[SpendRow]) -> tuple[ShareRow, ...]:
    top = max((r.micros for r in rows), default=0)
    return tuple(
        ShareRow(r.label, r.detail, r.micros, r.jobs, r.micros / top if top else 0.0) for r in rows
    )


async def _health(runtime: Runtime) -> list[ProviderRow]:
    """Each configured provider's breaker, observed figures and price (colour and spend later)."""
    names = sorted(runtime.providers)
    views = await runtime.health.breaker_views(names)
    observed = await runtime.health.observed(wait=True)
    rows = []
    for name in names:
        stats, view = observed.provider(name), views[name]
        rows.append(
            ProviderRow(
                name=name,
                color="",
                breaker=view.state.value,
                retry_in_s=view.retry_in,
                p50_s=stats.p50_s,
                p95_s=stats.p95_s,
                success_rate=stats.success_rate,
                samples=stats.samples,
                in_flight=stats.in_flight,
                price_micros=_price_1024(runtime, name),
                spend_micros=0,
            )
        )
    return rows


def _price_1024(runtime: Runtime, provider: str) -> int | None:
    """Today's price of one 1024x1024 image on ``provider`` (its first model in the catalog)."""
    for entry in runtime.catalog.models.values():
        offering = entry.providers.get(provider)
        if offering is not None:
            return estimate(runtime.catalog, offering.price, width=1024, height=1024, num_outputs=1)
    return None
