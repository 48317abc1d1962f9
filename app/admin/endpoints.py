"""``/v1/admin/teams`` and ``/v1/admin/keys``: the ``admin`` scope manages teams and API keys.

A key's secret is in the answer of its creation and of each roll, and nowhere else: listings show
its prefix. Changes to a key reach this process at once and other processes within the key cache
TTL (``IMAGEGATE_KEY_CACHE_TTL_S``).
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.admin import service
from app.admin.schemas import (
    IssuedKeyOut,
    KeyCreate,
    KeyList,
    KeyOut,
    KeyRoll,
    KeyUpdate,
    TeamCreate,
    TeamList,
    TeamOut,
    TeamUpdate,
)
from app.auth.dependencies import Admin
from app.errors import invalid
from app.web.deps import RuntimeDep, SessionDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200)]


def _after(cursor: str | None, prefix: str) -> str | None:
    if cursor is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if not decoded.startswith(prefix):
        raise invalid(["query", "cursor"], "is not a cursor this API returned")
    return decoded


def _cursor(ids: list[str], more: bool) -> str | None:
    return base64.urlsafe_b64encode(ids[-1].encode()).decode().rstrip("=") if more else None


# ---- teams ----------------------------------------------------------------------------------


@router.post("/teams", status_code=201, response_model=TeamOut)
async def create_team(
    body: TeamCreate, _: Admin, session: SessionDep, response: Response
) -> TeamOut:
    """Create a team, optionally with a monthly budget in USD."""
    team = await service.create_team(session, body)
    await session.commit()
    response.headers["Location"] = f"/v1/admin/teams/{team.id}"
    return service.team_view(team)


@router.get("/teams", response_model=TeamList)
async def list_teams(
    _: Admin, session: SessionDep, limit: Limit = 100, cursor: Cursor = None
) -> TeamList:
    """All teams, oldest first, with cursor pagination."""
    teams = await service.list_teams(session, after_id=_after(cursor, "team_"), limit=limit + 1)
    page = list(teams[:limit])
    return TeamList(
        data=[service.team_view(t) for t in page],
        next_cursor=_cursor([t.id for t in page], len(teams) > limit),
    )


@router.get("/teams/{team_id}", response_model=TeamOut)
async def get_team(team_id: str, _: Admin, session: SessionDep) -> TeamOut:
    """One team."""
    return service.team_view(await service.get_team(session, team_id))


@router.patch("/teams/{team_id}", response_model=TeamOut)
async def update_team(team_id: str, body: TeamUpdate, _: Admin, session: SessionDep) -> TeamOut:
    """Rename a team or change its monthly budget (``null`` removes the budget)."""
    team = await service.update_team(session, team_id, body)
    await session.commit()
    return service.team_view(team)


# ---- keys -----------------------------------------------------------------------------------


async def _key_out(session: SessionDep, row_id: str) -> KeyOut:
    row = await service.get_key(session, row_id)
    team = await service.get_team(session, row.team_id)
    return service.key_view(row, team.name)


@router.post("/keys", status_code=201, response_model=IssuedKeyOut)
async def create_key(
    body: KeyCreate, _: Admin, runtime: RuntimeDep, session: SessionDep, response: Response
) -> IssuedKeyOut:
    """Create an API key for a team. The full key is in this answer only: store it now."""
    row, team, key = await service.create_key(session, runtime.hasher, body)
    await session.commit()
    response.headers["Location"] = f"/v1/admin/keys/{row.id}"
    response.headers["Cache-Control"] = "no-store"
    return IssuedKeyOut(**service.key_view(row, team.name).model_dump(), key=key)


@router.get("/keys", response_model=KeyList)
async def list_keys(
    _: Admin,
    session: SessionDep,
    team_id: Annotated[str | None, Query(max_length=100)] = None,
    include_revoked: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> KeyList:
    """Keys (prefixes only, never secrets), oldest first; one team's with ``team_id``."""
    rows = await service.list_keys(
        session,
        team_id=team_id,
        include_revoked=include_revoked,
        after_id=_after(cursor, "key_"),
        limit=limit + 1,
    )
    page = list(rows[:limit])
    names = await service.team_names(session, [r.team_id for r in page])
    return KeyList(
        data=[service.key_view(r, names.get(r.team_id)) for r in page],
        next_cursor=_cursor([r.id for r in page], len(rows) > limit),
    )


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, _: Admin, session: SessionDep) -> KeyOut:
    """One key (its prefix, never its secret)."""
    return await _key_out(session, key_id)


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_key(
    key_id: str, body: KeyUpdate, _: Admin, runtime: RuntimeDep, session: SessionDep
) -> KeyOut:
    """Change a key's name, scopes, expiry, rate limit or budget (``null`` clears)."""
    await service.update_key(session, key_id, body)
    await session.commit()
    runtime.keys.forget(key_id)
    return await _key_out(session, key_id)


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: str, _: Admin, runtime: RuntimeDep, session: SessionDep) -> KeyOut:
    """Revoke a key for good; repeating it changes nothing."""
    await service.revoke_key(session, key_id)
    await session.commit()
    runtime.keys.forget(key_id)
    return await _key_out(session, key_id)


@router.post("/keys/{key_id}/roll", response_model=IssuedKeyOut)
async def roll_key(
    key_id: str,
    _: Admin,
    runtime: RuntimeDep,
    session: SessionDep,
    response: Response,
    body: KeyRoll | None = None,
) -> IssuedKeyOut:
    """Give a key a new secret (in this answer only). The old secret keeps working until
    ``grace_period_s`` seconds pass (default 24 h; 0 ends it at once)."""
    grace = body.grace_period_s if body and body.grace_period_s is not None else None
    if grace is None:
        grace = runtime.settings.key_roll_grace_s
    row, key = await service.roll_key(session, runtime.hasher, key_id, grace)
    await session.commit()
    runtime.keys.forget(key_id)
    response.headers["Cache-Control"] = "no-store"
    view = await _key_out(session, row.id)
    return IssuedKeyOut(**view.model_dump(), key=key)
