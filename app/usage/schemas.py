"""``GET /v1/usage``: the query (parsed and checked once) and the report's shape.

Range: ``from`` inclusive, ``to`` exclusive, on the job's creation time. Each is an RFC 3339 time
with a timezone or a date (meaning 00:00 UTC that day). Defaults: the start of the current UTC
month, and now. ``group_by`` takes any of ``day provider model team key``, comma-separated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.errors import InvalidInput, field_error
from app.kit.timeutil import utcnow


class GroupBy(StrEnum):
    DAY = "day"
    PROVIDER = "provider"
    MODEL = "model"
    TEAM = "team"
    KEY = "key"


class UsageFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


# The columns a dimension contributes to each group (team and key also carry their names).
GROUP_FIELDS: dict[GroupBy, tuple[str, ...]] = {
    GroupBy.DAY: ("day",),
    GroupBy.PROVIDER: ("provider",),
    GroupBy.MODEL: ("model",),
    GroupBy.TEAM: ("team_id", "team_name"),
    GroupBy.KEY: ("key_id", "key_name"),
}


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: datetime
    end: datetime
    group_by: tuple[GroupBy, ...]
    team_id: str | None  # None: every team (admin)
    format: UsageFormat = UsageFormat.JSON


def _moment(name: str, raw: str) -> tuple[datetime | None, dict[str, Any] | None]:
    loc: list[str | int] = ["query", name]
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(), UTC), None
        value = datetime.fromisoformat(raw)
    except ValueError:
        hint = " (a '+' in a URL must be sent as %2B)" if " " in raw else ""
        return None, field_error(loc, f"must be a date (YYYY-MM-DD) or an RFC 3339 time{hint}")
    if value.tzinfo is None:
        return None, field_error(loc, "must include a timezone (e.g. Z)")
    return value.astimezone(UTC), None


def _group_by(raw: str | None) -> tuple[tuple[GroupBy, ...], dict[str, Any] | None]:
    if raw is None or not raw.strip():
        return (), None
    names = [part.strip() for part in raw.split(",")]
    known = ", ".join(g.value for g in GroupBy)
    unknown = [n for n in names if n not in {g.value for g in GroupBy}]
    if unknown:
        msg = f"unknown grouping {', '.join(map(repr, unknown))}; use any of {known}"
        return (), field_error(["query", "group_by"], msg)
    if len(set(names)) != len(names):
        return (), field_error(["query", "group_by"], "names a grouping twice")
    return tuple(GroupBy(n) for n in names), None


def parse_query(
    start: str | None,
    end: str | None,
    group_by: str | None,
    output: str | None,
    team_id: str | None,
) -> UsageQuery:
    """The checked query, or one 422 that names every bad parameter."""
    errors: list[dict[str, Any]] = []
    now = utcnow()
    start_at: datetime | None = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end_at: datetime | None = now
    if start is not None:
        start_at, error = _moment("from", start)
        errors += [error] if error else []
    if end is not None:
        end_at, error = _moment("to", end)
        errors += [error] if error else []
    if start_at is not None and end_at is not None and start_at >= end_at:
        errors.append(field_error(["query", "to"], "must be later than 'from'"))
    groups, error = _group_by(group_by)
    errors += [error] if error else []
    fmt = (output or "json").strip().lower()
    if fmt not in {f.value for f in UsageFormat}:
        errors.append(field_error(["query", "format"], "must be 'json' or 'csv'"))
    if errors or start_at is None or end_at is None:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        raise InvalidInput(detail, errors=errors)
    return UsageQuery(start_at, end_at, groups, team_id, UsageFormat(fmt))


# Response shapes, for the OpenAPI document (the endpoint serialises with orjson).


class JobCounts(BaseModel):
    total: int
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int


class CompletionTimes(BaseModel):
    """Seconds from creation to completion of the completed jobs (linear interpolation)."""

    p50: float | None
    p95: float | None


class UsageFigures(BaseModel):
    jobs: JobCounts
    images: int
    megapixels: float = Field(description="output pixels / 1,000,000")
    estimated_usd: str = Field(description="sum of the estimates of every job in the group")
    actual_usd: str = Field(description="sum of what the completed jobs cost")
    unpriced_jobs: int = Field(description="jobs whose cost could not be estimated")
    time_to_completion_s: CompletionTimes


class UsageGroup(UsageFigures):
    group: dict[str, str | None]


class UsageReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: datetime = Field(alias="from")
    to: datetime
    group_by: list[GroupBy]
    currency: Literal["USD"]
    groups: list[UsageGroup]
    totals: UsageFigures


def parse_month(raw: str | None) -> str:
    """``YYYY-MM`` (a UTC calendar month); the current month by default."""
    if raw is None:
        return utcnow().strftime("%Y-%m")
    try:
        return datetime.strptime(raw.strip() + "-01", "%Y-%m-%d").strftime("%Y-%m")
    except ValueError:
        raise InvalidInput(
            "query.month: must be a month as YYYY-MM",
            errors=[field_error(["query", "month"], "must be a month as YYYY-MM")],
        ) from None


class BudgetFigures(BaseModel):
    budget_usd: str | None = Field(description="the monthly budget; null: none")
    spent_usd: str = Field(description="settled cost of the month's completed jobs")
    reserved_usd: str = Field(description="held for the month's jobs still running")
    remaining_usd: str | None = Field(description="budget - spent - reserved; null: no budget")


class BudgetReport(BaseModel):
    month: str
    team: BudgetFigures
    key: BudgetFigures
