"""``/v1/usage`` refuses bad queries with a 422 naming each bad parameter, and checks scopes."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import text

from app.db import create_engine
from app.usage.stats import percentile_cont
from tests.conftest import Gateway
from tests.helpers import new_key


async def _get(gateway: Gateway, key: str, **params: str) -> tuple[int, dict[str, object]]:
    response = await gateway.http.get(
        "/v1/usage", params=params, headers={"Authorization": f"Bearer {key}"}
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("params", "loc", "fragment"),
    [
        ({"group_by": "day,colour"}, ["query", "group_by"], "unknown grouping 'colour'"),
        ({"group_by": "day,day"}, ["query", "group_by"], "twice"),
        ({"format": "xml"}, ["query", "format"], "'json' or 'csv'"),
        ({"from": "yesterday"}, ["query", "from"], "RFC 3339"),
        ({"from": "2024-02-30"}, ["query", "from"], "RFC 3339"),
        ({"to": "2024-02-01T10:00:00"}, ["query", "to"], "timezone"),
        ({"to": "2024-02-01T10:00:00 01:00"}, ["query", "to"], "%2B"),
        ({"from": "2024-03-01", "to": "2024-02-01"}, ["query", "to"], "later than 'from'"),
        ({"from": "2024-03-01", "to": "2024-03-01"}, ["query", "to"], "later than 'from'"),
    ],
)
async def test_bad_parameters_are_422_naming_the_parameter(
    gateway: Gateway, params: dict[str, str], loc: list[str], fragment: str
) -> None:
    status, problem = await _get(gateway, await new_key(gateway.runtime), **params)
    assert status == 422
    assert problem["code"] == "invalid_input"
    errors = problem["errors"]
    assert isinstance(errors, list) and len(errors) == 1
    assert errors[0]["loc"] == loc
    assert fragment in errors[0]["msg"]


async def test_every_bad_parameter_is_named_at_once(gateway: Gateway) -> None:
    key = await new_key(gateway.runtime)
    status, problem = await _get(gateway, key, group_by="nope", format="pdf", to="soon")
    assert status == 422
    assert [e["loc"] for e in problem["errors"]] == [  # type: ignore[attr-defined]
        ["query", "to"],
        ["query", "group_by"],
        ["query", "format"],
    ]


async def test_parameters_are_case_and_space_tolerant_where_harmless(gateway: Gateway) -> None:
    key = await new_key(gateway.runtime)
    status, report = await _get(
        gateway, key, group_by=" provider , model", format="JSON", to="2030-01-01T00:00:00+02:00"
    )
    assert status == 200
    assert report["group_by"] == ["provider", "model"]
    assert report["to"] == "2029-12-31T22:00:00.000Z"


async def test_usage_needs_the_usage_read_scope(gateway: Gateway) -> None:
    writer = await new_key(gateway.runtime, scopes=["images:write", "images:read"])
    status, problem = await _get(gateway, writer)
    assert status == 403 and problem["code"] == "forbidden"
    anonymous = await gateway.http.get("/v1/usage")
    assert anonymous.status_code == 401


async def test_the_default_range_is_this_month_so_far(gateway: Gateway) -> None:
    status, report = await _get(gateway, await new_key(gateway.runtime, scopes=["usage:read"]))
    assert status == 200
    start = str(report["from"])
    assert start.endswith("-01T00:00:00.000Z")
    assert str(report["to"]) > start


async def test_percentile_cont_in_python_equals_postgresql(pg_url: str) -> None:
    """SQLite reports use the Python interpolation; it must give PostgreSQL's doubles exactly."""
    rng = random.Random(7)
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as connection:
            for size in (1, 2, 3, 4, 7, 20, 101):
                micros = [rng.randrange(0, 600_000_000) for _ in range(size)]
                values = ", ".join(f"({m})" for m in micros)
                row = await connection.execute(
                    text(
                        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v::float8 / 1e6),"
                        " percentile_cont(0.95) WITHIN GROUP (ORDER BY v::float8 / 1e6)"
                        f" FROM (VALUES {values}) AS t(v)"
                    )
                )
                p50, p95 = row.one()
                seconds = [m / 1_000_000 for m in micros]
                assert (percentile_cont(seconds, 0.5), percentile_cont(seconds, 0.95)) == (p50, p95)
    finally:
        await engine.dispose()


async def test_budget_standing_names_a_bad_month(gateway: Gateway) -> None:
    key = await new_key(gateway.runtime, scopes=["usage:read"])
    headers = {"Authorization": f"Bearer {key}"}
    bad = await gateway.http.get("/v1/usage/budget", params={"month": "2024-13"}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["errors"] == [
        {"loc": ["query", "month"], "msg": "must be a month as YYYY-MM"}
    ]
    past = await gateway.http.get("/v1/usage/budget", params={"month": "2024-02"}, headers=headers)
    assert past.status_code == 200
    assert past.json()["month"] == "2024-02"
    assert past.json()["team"]["spent_usd"] == "0.000000"
