"""``GET /v1/usage`` (figures per group, JSON or CSV) and ``GET /v1/usage/budget``."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.auth.dependencies import require
from app.auth.service import Principal
from app.budgets import service as budgets
from app.kit.money import format_usd
from app.usage import service
from app.usage.schemas import (
    BudgetReport,
    UsageFormat,
    UsageReport,
    parse_month,
    parse_query,
)
from app.web.deps import SessionDep

router = APIRouter(prefix="/v1/usage", tags=["usage"])

UsageReader = Annotated[Principal, Depends(require("usage:read"))]


@router.get(
    "",
    response_model=UsageReport,
    responses={
        200: {
            "description": "the report; `format=csv` gives one header row and a row per group",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def get_usage(
    principal: UsageReader,
    session: SessionDep,
    start: Annotated[
        str | None,
        Query(alias="from", max_length=64, description="inclusive; a date or RFC 3339 time"),
    ] = None,
    to: Annotated[
        str | None, Query(max_length=64, description="exclusive; a date or RFC 3339 time")
    ] = None,
    group_by: Annotated[
        str | None,
        Query(max_length=100, description="comma-separated: day, provider, model, team, key"),
    ] = None,
    format: Annotated[str | None, Query(max_length=10, description="json (default) or csv")] = None,
) -> Response:
    """Jobs by status, images, megapixels, costs and p50/p95 completion time per group.

    A key sees its own team's usage; an `admin` key sees every team's.
    """
    team = None if "admin" in principal.scopes else principal.team_id
    query = parse_query(start, to, group_by, format, team)
    report = await service.usage_report(session, query)
    if query.format is UsageFormat.CSV:
        name = f"imagegate-usage-{query.start:%Y%m%dT%H%M%SZ}-{query.end:%Y%m%dT%H%M%SZ}.csv"
        return Response(
            service.to_csv(report, query.group_by),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return Response(orjson.dumps(report), media_type="application/json")


def _budget_line(line: budgets.BudgetLine) -> dict[str, str | None]:
    return {
        "budget_usd": format_usd(line.budget_micros),
        "spent_usd": format_usd(line.balance.spent_micros),
        "reserved_usd": format_usd(line.balance.reserved_micros),
        "remaining_usd": format_usd(line.remaining_micros),
    }


@router.get("/budget", response_model=BudgetReport)
async def get_budget(
    principal: UsageReader,
    session: SessionDep,
    month: Annotated[
        str | None, Query(max_length=7, description="YYYY-MM (UTC); default: this month")
    ] = None,
) -> Response:
    """The calling key's team and the key itself: monthly budget, spent, reserved, remaining."""
    status = await budgets.status(session, principal.team_id, principal.key_id, parse_month(month))
    report = {
        "month": status.month,
        "team": _budget_line(status.team),
        "key": _budget_line(status.key),
    }
    return Response(orjson.dumps(report), media_type="application/json")
