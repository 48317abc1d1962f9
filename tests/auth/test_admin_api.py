"""The admin API: teams and keys created, listed, updated, revoked and rolled; bad input is a 422
naming the field, unknown ids a 404, and a key's secret appears only when it is created or rolled.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.auth.conftest import admin_headers
from tests.conftest import Gateway
from tests.helpers import body


def _name(prefix: str = "team") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _team(gateway: Gateway, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await gateway.http.post(
        "/v1/admin/teams", json={"name": _name(), **fields}, headers=admin
    )
    assert response.status_code == 201, response.text
    team: dict[str, Any] = response.json()
    return team


async def test_teams_create_list_get_update(gateway: Gateway) -> None:
    admin = await admin_headers(gateway)
    team = await _team(gateway, admin, monthly_budget_usd="250.5")
    assert team["monthly_budget_usd"] == "250.500000"
    assert team["id"].startswith("team_") and team["created_at"].endswith("Z")

    got = await gateway.http.get(f"/v1/admin/teams/{team['id']}", headers=admin)
    assert got.json() == team

    renamed = _name("renamed")
    patched = await gateway.http.patch(
        f"/v1/admin/teams/{team['id']}",
        json={"name": renamed, "monthly_budget_usd": "0.000001"},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == renamed
    assert patched.json()["monthly_budget_usd"] == "0.000001"
    # Leaving a field out keeps it; null clears it.
    kept = await gateway.http.patch(f"/v1/admin/teams/{team['id']}", json={}, headers=admin)
    assert kept.json()["monthly_budget_usd"] == "0.000001"
    cleared = await gateway.http.patch(
        f"/v1/admin/teams/{team['id']}", json={"monthly_budget_usd": None}, headers=admin
    )
    assert cleared.json()["monthly_budget_usd"] is None

    # Pagination walks every team exactly once.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await gateway.http.get("/v1/admin/teams", params=params, headers=admin)).json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert team["id"] in seen and len(seen) == len(set(seen))


async def test_duplicate_team_name_is_a_conflict_naming_the_field(gateway: Gateway) -> None:
    admin = await admin_headers(gateway)
    team = await _team(gateway, admin)
    again = await gateway.http.post("/v1/admin/teams", json={"name": team["name"]}, headers=admin)
    assert again.status_code == 409
    assert again.json()["code"] == "name_taken"
    assert again.json()["errors"][0]["loc"] == ["name"]
    other = await _team(gateway, admin)
    rename = await gateway.http.patch(
        f"/v1/admin/teams/{other['id']}", json={"name": team["name"]}, headers=admin
    )
    assert rename.status_code == 409


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({}, ["name"]),
        ({"name": "   "}, ["name"]),
        ({"name": "x" * 101}, ["name"]),
        ({"name": "tab\there"}, ["name"]),
        ({"name": "nul\u0000"}, ["name"]),
        ({"name": "ok", "monthly_budget_usd": "-1"}, ["monthly_budget_usd"]),
        ({"name": "ok", "monthly_budget_usd": "1.1234567"}, ["monthly_budget_usd"]),
        ({"name": "ok", "monthly_budget_usd": "ten"}, ["monthly_budget_usd"]),
        ({"name": "ok", "monthly_budget_usd": "NaN"}, ["monthly_budget_usd"]),
        ({"name": "ok", "monthly_budget_usd": "1e3"}, ["monthly_budget_usd"]),
        ({"name": "ok", "monthly_budget_usd": 10}, ["monthly_budget_usd"]),
        ({"name": "ok", "monthly_budget_usd": "99999999999"}, ["monthly_budget_usd"]),
        ({"name": "ok", "colour": "red"}, ["colour"]),
    ],
)
async def test_bad_team_input_is_422_naming_the_field(
    gateway: Gateway, payload: dict[str, Any], loc: list[str]
) -> None:
    admin = await admin_headers(gateway)
    response = await gateway.http.post("/v1/admin/teams", json=payload, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc


async def test_key_lifecycle_secret_shown_once(gateway: Gateway) -> None:
    admin = await admin_headers(gateway)
    team = await _team(gateway, admin)
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    created = await gateway.http.post(
        "/v1/admin/keys",
        json={
            "team_id": team["id"],
            "name": "frontend",
            "scopes": ["images:read", "images:write", "images:read"],
            "expires_at": expires,
            "rate_limit_per_minute": 120,
            "rate_limit_burst": 10,
            "monthly_budget_usd": "5",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key = created.json()
    secret = key["key"]
    assert secret.startswith("ig_") and key["prefix"] == secret[:11]
    assert key["scopes"] == ["images:read", "images:write"]  # de-duplicated, order kept
    assert key["status"] == "active" and key["team_name"] == team["name"]
    assert (key["rate_limit_per_minute"], key["rate_limit_burst"]) == (120, 10)
    assert key["monthly_budget_usd"] == "5.000000"
    assert created.headers["location"] == f"/v1/admin/keys/{key['id']}"

    # The key works, and is never shown again.
    used = await gateway.http.post("/v1/images", json=body(), headers={"X-API-Key": secret})
    assert used.status_code == 202, used.text
    got = (await gateway.http.get(f"/v1/admin/keys/{key['id']}", headers=admin)).json()
    assert "key" not in got and got["last_used_at"] is not None
    listed = await gateway.http.get("/v1/admin/keys", params={"team_id": team["id"]}, headers=admin)
    assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
    assert secret not in listed.text and secret not in got.__repr__()

    patched = await gateway.http.patch(
        f"/v1/admin/keys/{key['id']}",
        json={"scopes": ["images:read"], "rate_limit_per_minute": None, "name": "renamed"},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["scopes"] == ["images:read"]
    assert patched.json()["rate_limit_per_minute"] is None
    assert patched.json()["rate_limit_burst"] == 10
    # The scope change applies at once in this process.
    refused = await gateway.http.post("/v1/images", json=body(), headers={"X-API-Key": secret})
    assert refused.status_code == 403

    revoked = await gateway.http.post(f"/v1/admin/keys/{key['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    again = await gateway.http.post(f"/v1/admin/keys/{key['id']}/revoke", headers=admin)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    gone = await gateway.http.get("/v1/images", headers={"X-API-Key": secret})
    assert gone.status_code == 401
    hidden = await gateway.http.get("/v1/admin/keys", params={"team_id": team["id"]}, headers=admin)
    assert hidden.json()["data"] == []
    shown = await gateway.http.get(
        "/v1/admin/keys", params={"team_id": team["id"], "include_revoked": "true"}, headers=admin
    )
    assert [k["status"] for k in shown.json()["data"]] == ["revoked"]
    roll = await gateway.http.post(f"/v1/admin/keys/{key['id']}/roll", headers=admin)
    assert roll.status_code == 409 and roll.json()["code"] == "key_not_rollable"


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"scopes": ["images:paint"]}, ["scopes", 0]),
        ({"scopes": []}, ["scopes"]),
        ({"expires_at": "2020-01-01T00:00:00Z"}, ["expires_at"]),
        ({"expires_at": "2099-01-01T00:00:00"}, ["expires_at"]),
        ({"expires_at": "soon"}, ["expires_at"]),
        ({"expires_at": "9999-12-31T23:59:59-14:00"}, ["expires_at"]),
        ({"expires_at": "0001-01-01T00:00:00+14:00"}, ["expires_at"]),
        ({"rate_limit_per_minute": -1}, ["rate_limit_per_minute"]),
        ({"rate_limit_per_minute": "60"}, ["rate_limit_per_minute"]),
        ({"rate_limit_per_minute": 1.5}, ["rate_limit_per_minute"]),
        ({"rate_limit_burst": 0}, ["rate_limit_burst"]),
        ({"rate_limit_burst": True}, ["rate_limit_burst"]),
        ({"monthly_budget_usd": "1,5"}, ["monthly_budget_usd"]),
        ({"name": ""}, ["name"]),
        ({"secret": "mine"}, ["secret"]),
    ],
)
async def test_bad_key_input_is_422_naming_the_field(
    gateway: Gateway, payload: dict[str, Any], loc: list[str | int]
) -> None:
    admin = await admin_headers(gateway)
    team = await _team(gateway, admin)
    created = await gateway.http.post(
        "/v1/admin/keys", json={"team_id": team["id"], **payload}, headers=admin
    )
    assert created.status_code == 422, created.text
    assert created.json()["errors"][0]["loc"] == loc
    key = (
        await gateway.http.post("/v1/admin/keys", json={"team_id": team["id"]}, headers=admin)
    ).json()
    if "secret" in payload:
        return
    patched = await gateway.http.patch(f"/v1/admin/keys/{key['id']}", json=payload, headers=admin)
    if payload == {"scopes": []} or payload.get("name") == "":
        assert patched.status_code == 422
    else:
        assert patched.status_code == 422, patched.text
        assert patched.json()["errors"][0]["loc"] == loc


async def test_unknown_team_in_body_is_422_and_unknown_ids_are_404(gateway: Gateway) -> None:
    admin = await admin_headers(gateway)
    for team_id in ("team_01ZZZZZZZZZZZZZZZZZZZZZZZZ", "x" * 90, "bad\u0000id"):
        created = await gateway.http.post(
            "/v1/admin/keys", json={"team_id": team_id}, headers=admin
        )
        assert created.status_code == 422, created.text
        assert created.json()["errors"][0]["loc"] == ["team_id"]
    for path in (
        "/v1/admin/teams/team_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
        "/v1/admin/keys/key_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
        "/v1/admin/keys/%00",
    ):
        assert (await gateway.http.get(path, headers=admin)).status_code == 404
    missing = "key_01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    for verb, path, payload in (
        ("PATCH", f"/v1/admin/keys/{missing}", {"name": "x"}),
        ("POST", f"/v1/admin/keys/{missing}/revoke", None),
        ("POST", f"/v1/admin/keys/{missing}/roll", None),
        ("PATCH", "/v1/admin/teams/team_01ZZZZZZZZZZZZZZZZZZZZZZZZ", {"name": "x"}),
    ):
        response = await gateway.http.request(verb, path, json=payload, headers=admin)
        assert response.status_code == 404, (verb, path, response.text)
    listing = await gateway.http.get(
        "/v1/admin/keys", params={"team_id": "team_01ZZZZZZZZZZZZZZZZZZZZZZZZ"}, headers=admin
    )
    assert listing.status_code == 404
    cursor = await gateway.http.get("/v1/admin/keys", params={"cursor": "%%%"}, headers=admin)
    assert cursor.status_code == 422 and cursor.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_null_for_a_required_field_in_an_update_is_422(gateway: Gateway) -> None:
    admin = await admin_headers(gateway)
    team = await _team(gateway, admin)
    renamed = await gateway.http.patch(
        f"/v1/admin/teams/{team['id']}", json={"name": None}, headers=admin
    )
    assert renamed.status_code == 422 and renamed.json()["errors"][0]["loc"] == ["name"]
    key = (
        await gateway.http.post("/v1/admin/keys", json={"team_id": team["id"]}, headers=admin)
    ).json()
    for field in ("name", "scopes"):
        response = await gateway.http.patch(
            f"/v1/admin/keys/{key['id']}", json={field: None}, headers=admin
        )
        assert response.status_code == 422 and response.json()["errors"][0]["loc"] == [field]
