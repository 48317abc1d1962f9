"""Usage reports: job counts, images, megapixels, costs and completion times per group.

Figures per group: jobs by status; images produced and their megapixels (pixels / 1,000,000);
``estimated_usd``, the sum of every job's estimate (failed and cancelled ones included: it is
what was asked for); ``actual_usd``, what the completed jobs cost; ``unpriced_jobs``; and the
p50/p95 seconds from creation to completion of the completed jobs, rounded to milliseconds.
Money is summed in integer micro-dollars and rendered as decimal strings.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.money import format_usd
from app.kit.timeutil import rfc3339
from app.usage.repository import GroupKey, GroupRow, UsageRepository
from app.usage.schemas import GROUP_FIELDS, GroupBy, UsageQuery
from app.usage.stats import percentile_cont

_STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
_FIGURE_COLUMNS = (
    "jobs_total",
    *(f"jobs_{status}" for status in _STATUSES),
    "images",
    "megapixels",
    "estimated_usd",
    "actual_usd",
    "unpriced_jobs",
    "p50_s",
    "p95_s",
)
# Spreadsheets run a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


async def usage_report(session: AsyncSession, query: UsageQuery) -> dict[str, Any]:
    repo = UsageRepository(session)
    groups = await _with_percentiles(repo, query, await repo.aggregate(query))
    totals_query = replace(query, group_by=())
    totals = await _with_percentiles(repo, totals_query, await repo.aggregate(totals_query))
    labels = await _labels(repo, query, groups)
    groups.sort(key=lambda row: tuple((value is None, value or "") for value in row.key))
    return {
        "from": rfc3339(query.start),
        "to": rfc3339(query.end),
        "group_by": [g.value for g in query.group_by],
        "currency": "USD",
        "groups": [
            {"group": _group(query.group_by, row.key, labels), **_figures(row)} for row in groups
        ],
        "totals": _figures(totals[0]),
    }


async def _with_percentiles(
    repo: UsageRepository, query: UsageQuery, rows: list[GroupRow]
) -> list[GroupRow]:
    if repo.percentiles_in_sql:
        return rows
    durations = await repo.durations(query)
    return [
        replace(
            row,
            p50_s=percentile_cont(durations.get(row.key, []), 0.5),
            p95_s=percentile_cont(durations.get(row.key, []), 0.95),
        )
        for row in rows
    ]


async def _labels(
    repo: UsageRepository, query: UsageQuery, rows: list[GroupRow]
) -> dict[GroupBy, dict[str, str]]:
    labels: dict[GroupBy, dict[str, str]] = {}
    for index, group in enumerate(query.group_by):
        ids = [row.key[index] for row in rows if row.key[index] is not None]
        if group is GroupBy.TEAM:
            labels[group] = await repo.team_names(i for i in ids if i is not None)
        elif group is GroupBy.KEY:
            labels[group] = await repo.key_names(i for i in ids if i is not None)
    return labels


def _group(
    group_by: tuple[GroupBy, ...], key: GroupKey, labels: dict[GroupBy, dict[str, str]]
) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for group, value in zip(group_by, key, strict=True):
        fields = GROUP_FIELDS[group]
        out[fields[0]] = value
        if len(fields) > 1:
            out[fields[1]] = labels.get(group, {}).get(value) if value is not None else None
    return out


def _megapixels(pixels: int) -> Decimal:
    return (Decimal(pixels) / Decimal(1_000_000)).quantize(Decimal("0.000001"))


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _figures(row: GroupRow) -> dict[str, Any]:
    return {
        "jobs": {"total": row.total, **{s: row.counts.get(s, 0) for s in _STATUSES}},
        "images": row.images,
        "megapixels": float(_megapixels(row.pixels)),
        "estimated_usd": format_usd(row.estimated_micros),
        "actual_usd": format_usd(row.actual_micros),
        "unpriced_jobs": row.unpriced,
        "time_to_completion_s": {"p50": _seconds(row.p50_s), "p95": _seconds(row.p95_s)},
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(report: dict[str, Any], group_by: tuple[GroupBy, ...]) -> str:
    """One header row, then one row per group (no totals row: it would be summed twice)."""
    group_columns = [field for g in group_by for field in GROUP_FIELDS[g]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([*group_columns, *_FIGURE_COLUMNS])
    for group in report["groups"]:
        times = group["time_to_completion_s"]
        figures = [
            group["jobs"]["total"],
            *(group["jobs"][s] for s in _STATUSES),
            group["images"],
            f"{group['megapixels']:.6f}",
            group["estimated_usd"],
            group["actual_usd"],
            group["unpriced_jobs"],
            None if times["p50"] is None else f"{times['p50']:.3f}",
            None if times["p95"] is None else f"{times['p95']:.3f}",
        ]
        writer.writerow([*(_cell(group["group"][c]) for c in group_columns), *figures])
    return buffer.getvalue()
