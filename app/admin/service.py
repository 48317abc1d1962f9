"""Managing teams and API keys (admin API and CLI). Services never commit: the caller does.

Rolling a key gives it a new secret and keeps the old one working until a grace period ends (one
previous secret per key: rolling again during a grace period ends the older secret at once).
Revoking is final. Secrets appear only in the return value of ``create_key`` and ``roll_key``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.admin.schemas import (
    KeyCreate,
    KeyOut,
    KeyStatus,
    KeyUpdate,
    TeamCreate,
    TeamOut,
    TeamUpdate,
)
from app.auth.keys import KeyHasher, display_prefix, generate_key
from app.auth.repository import AuthRepository
from app.auth.service import KeyTerms, new_key_row
from app.errors import Conflict, NotFound, field_error, invalid
from app.kit.ids import new_id
from app.kit.money import format_usd, usd_to_micros
from app.kit.timeutil import rfc3339, utcnow
from app.models import ApiKey, Team

_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class NameTaken(Conflict):
    code, title = "name_taken", "Name already taken"


class KeyNotRollable(Conflict):
    code, title = "key_not_rollable", "Key cannot be rolled"


def _micros(value: str | None) -> int | None:
    return None if value is None else usd_to_micros(value)


# ---- teams ----------------------------------------------------------------------------------


def team_view(team: Team) -> TeamOut:
    return TeamOut(
        id=team.id,
        name=team.name,
        monthly_budget_usd=format_usd(team.monthly_budget_micros),
        created_at=rfc3339(team.created_at) or "",
    )


async def get_team(session: AsyncSession, team_id: str, *, for_update: bool = False) -> Team:
    team = (
        await AuthRepository(session).team(team_id, for_update=for_update)
        if _ID.match(team_id)
        else None
    )
    if team is None:
        raise NotFound(f"no team {team_id}")
    return team


async def find_team_or_none(session: AsyncSession, id_or_name: str) -> Team | None:
    """A team by id or by name (the CLI accepts either)."""
    repo = AuthRepository(session)
    team = await repo.team(id_or_name) if _ID.match(id_or_name) else None
    return team or await repo.team_by_name(id_or_name)


async def find_team(session: AsyncSession, id_or_name: str) -> Team:
    team = await find_team_or_none(session, id_or_name)
    if team is None:
        raise NotFound(f"no team {id_or_name}")
    return team


async def list_teams(session: AsyncSession, *, after_id: str | None, limit: int) -> Sequence[Team]:
    return await AuthRepository(session).teams(after_id=after_id, limit=limit)


async def _name_free(session: AsyncSession, name: str, team_id: str | None = None) -> None:
    other = await AuthRepository(session).team_by_name(name)
    if other is not None and other.id != team_id:
        raise _name_taken(name)


def _name_taken(name: str) -> NameTaken:
    return NameTaken(
        f"name: a team named {name!r} already exists",
        errors=[field_error(["name"], "already taken")],
    )


async def _flush_team(session: AsyncSession, team: Team) -> None:
    """Flush in a savepoint so a concurrent create with the same name is a 409, not a 500."""
    try:
        async with session.begin_nested():
            session.add(team)
            await session.flush()
    except IntegrityError:
        raise _name_taken(team.name) from None


async def create_team(session: AsyncSession, body: TeamCreate) -> Team:
    await _name_free(session, body.name)
    team = Team(
        id=new_id("team"),
        name=body.name,
        monthly_budget_micros=_micros(body.monthly_budget_usd),
        created_at=utcnow(),
    )
    await _flush_team(session, team)
    return team


async def update_team(session: AsyncSession, team_id: str, body: TeamUpdate) -> Team:
    team = await get_team(session, team_id, for_update=True)
    given = body.model_fields_set
    if "name" in given:
        if body.name is None:
            raise invalid(["name"], "cannot be null")
        await _name_free(session, body.name, team.id)
        team.name = body.name
    if "monthly_budget_usd" in given:
        team.monthly_budget_micros = _micros(body.monthly_budget_usd)
    await _flush_team(session, team)
    return team


# ---- keys -----------------------------------------------------------------------------------


def key_status(row: ApiKey, now: datetime) -> KeyStatus:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def key_view(row: ApiKey, team_name: str | None) -> KeyOut:
    grace_end = row.previous_secret_expires_at if row.previous_secret_hmac else None
    return KeyOut(
        id=row.id,
        team_id=row.team_id,
        team_name=team_name,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        status=key_status(row, utcnow()),
        rate_limit_per_minute=row.rate_limit_per_minute,
        rate_limit_burst=row.rate_limit_burst,
        monthly_budget_usd=format_usd(row.monthly_budget_micros),
        expires_at=rfc3339(row.expires_at),
        revoked_at=rfc3339(row.revoked_at),
        last_used_at=rfc3339(row.last_used_at),
        created_at=rfc3339(row.created_at) or "",
        previous_secret_expires_at=rfc3339(grace_end),
    )


def _future(loc: str, value: datetime | None) -> datetime | None:
    if value is not None and value <= utcnow():
        raise invalid([loc], "must be in the future")
    return value


async def get_key(session: AsyncSession, key_id: str, *, for_update: bool = False) -> ApiKey:
    row = (
        await AuthRepository(session).key(key_id, for_update=for_update)
        if _ID.match(key_id)
        else None
    )
    if row is None:
        raise NotFound(f"no key {key_id}")
    return row


async def list_keys(
    session: AsyncSession,
    *,
    team_id: str | None,
    include_revoked: bool,
    after_id: str | None,
    limit: int,
) -> Sequence[ApiKey]:
    if team_id is not None:
        await get_team(session, team_id)
    return await AuthRepository(session).list_keys(
        team_id, include_revoked=include_revoked, after_id=after_id, limit=limit
    )


async def create_key(
    session: AsyncSession, hasher: KeyHasher, body: KeyCreate
) -> tuple[ApiKey, Team, str]:
    """A new key for an existing team, and its secret (returned once, never stored)."""
    team = await AuthRepository(session).team(body.team_id) if _ID.match(body.team_id) else None
    if team is None:
        raise invalid(["team_id"], f"no team {body.team_id!r}")
    terms = KeyTerms(
        name=body.name,
        scopes=tuple(body.scopes),
        expires_at=_future("expires_at", body.expires_at),
        rate_limit_per_minute=body.rate_limit_per_minute,
        rate_limit_burst=body.rate_limit_burst,
        monthly_budget_micros=_micros(body.monthly_budget_usd),
    )
    row, key = new_key_row(hasher, team.id, terms)
    row.created_at = utcnow()
    AuthRepository(session).add(row)
    await session.flush()
    return row, team, key


async def update_key(session: AsyncSession, key_id: str, body: KeyUpdate) -> ApiKey:
    row = await get_key(session, key_id, for_update=True)
    given = body.model_fields_set
    for required in ("name", "scopes"):
        if required in given and getattr(body, required) is None:
            raise invalid([required], "cannot be null")
    if body.name is not None:
        row.name = body.name
    if body.scopes is not None:
        row.scopes = list(dict.fromkeys(body.scopes))
    if "expires_at" in given:
        row.expires_at = _future("expires_at", body.expires_at)
    if "rate_limit_per_minute" in given:
        row.rate_limit_per_minute = body.rate_limit_per_minute
    if "rate_limit_burst" in given:
        row.rate_limit_burst = body.rate_limit_burst
    if "monthly_budget_usd" in given:
        row.monthly_budget_micros = _micros(body.monthly_budget_usd)
    await session.flush()
    return row


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    """Revoke for good (repeating it changes nothing). Its secrets stop working at once here and
    within the key cache TTL in other processes."""
    row = await get_key(session, key_id, for_update=True)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    row.previous_secret_hmac = None
    row.previous_secret_expires_at = None
    await session.flush()
    return row


async def roll_key(
    session: AsyncSession, hasher: KeyHasher, key_id: str, grace_s: int
) -> tuple[ApiKey, str]:
    """A new secret for the key; the current one keeps working for ``grace_s`` seconds."""
    row = await get_key(session, key_id, for_update=True)
    now = utcnow()
    status = key_status(row, now)
    if status != "active":
        raise KeyNotRollable(f"key {key_id} is {status}; only an active key can be rolled")
    key = generate_key()
    if grace_s > 0:
        row.previous_secret_hmac = row.secret_hmac
        row.previous_secret_expires_at = now + timedelta(seconds=grace_s)
    else:
        row.previous_secret_hmac = None
        row.previous_secret_expires_at = None
    row.secret_hmac = hasher(key)
    row.prefix = display_prefix(key)
    await session.flush()
    return row, key


async def team_names(session: AsyncSession, team_ids: Sequence[str]) -> dict[str, str]:
    return await AuthRepository(session).team_names(team_ids)
