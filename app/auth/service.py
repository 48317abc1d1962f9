"""Who is calling (``Principal``, ``KeyVerifier``) and issuing new keys.

Issuing writes only the key's HMAC and its display prefix; the key itself goes back to the caller
once and is never stored or logged. Managing teams and keys afterwards is ``app.admin.service``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.keys import DEFAULT_SCOPES, SCOPES, KeyHasher, display_prefix, generate_key
from app.auth.principal import Principal
from app.auth.repository import AuthRepository
from app.auth.verifier import KeyVerifier
from app.kit.ids import new_id
from app.models import ApiKey, Team

__all__ = ["IssuedKey", "KeyVerifier", "Principal", "issue_key", "new_key_row"]


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str  # shown once
    key_id: str
    team_id: str
    team_name: str
    scopes: tuple[str, ...]
    row: ApiKey | None = None


@dataclass(frozen=True, slots=True)
class KeyTerms:
    """Everything about a key but its secret."""

    name: str = "default"
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    expires_at: datetime | None = None
    rate_limit_per_minute: int | None = None
    rate_limit_burst: int | None = None
    monthly_budget_micros: int | None = None


def new_key_row(hasher: KeyHasher, team_id: str, terms: KeyTerms) -> tuple[ApiKey, str]:
    """A new key row and its secret (the secret is not in the row, only its HMAC)."""
    unknown = set(terms.scopes) - SCOPES
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}; known: {sorted(SCOPES)}")
    key = generate_key()
    row = ApiKey(
        id=new_id("key"),
        team_id=team_id,
        name=terms.name,
        prefix=display_prefix(key),
        secret_hmac=hasher(key),
        scopes=list(dict.fromkeys(terms.scopes)),
        rate_limit_per_minute=terms.rate_limit_per_minute,
        rate_limit_burst=terms.rate_limit_burst,
        monthly_budget_micros=terms.monthly_budget_micros,
        expires_at=terms.expires_at,
    )
    return row, key


async def issue_key(
    session: AsyncSession,
    hasher: KeyHasher,
    *,
    team_name: str,
    name: str = "default",
    scopes: Sequence[str] = DEFAULT_SCOPES,
    terms: KeyTerms | None = None,
) -> IssuedKey:
    """Create a key (and its team when new). The caller commits; the key is never stored."""
    terms = terms or KeyTerms(name=name, scopes=tuple(scopes))
    repo = AuthRepository(session)
    team = await repo.team_by_name(team_name)
    if team is None:
        team = Team(id=new_id("team"), name=team_name)
        repo.add(team)
        await session.flush()
    row, key = new_key_row(hasher, team.id, terms)
    repo.add(row)
    return IssuedKey(key, row.id, team.id, team.name, tuple(row.scopes), row)
