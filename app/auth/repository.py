"""SQL on teams and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, Team


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def key_by_hmac(self, secret_hmac: str) -> ApiKey | None:
        """The key whose current secret, or previous (rolled) secret, has this HMAC."""
        query = select(ApiKey).where(
            or_(ApiKey.secret_hmac == secret_hmac, ApiKey.previous_secret_hmac == secret_hmac)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def touch(self, key_id: str, when: datetime) -> None:
        await self.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
        )

    async def key(self, key_id: str, *, for_update: bool = False) -> ApiKey | None:
        query = select(ApiKey).where(ApiKey.id == key_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def count_keys(self) -> int:
        return int((await self.session.execute(select(func.count(ApiKey.id)))).scalar_one())

    async def list_keys(
        self,
        team_id: str | None = None,
        *,
        include_revoked: bool = True,
        after_id: str | None = None,
        limit: int | None = None,
    ) -> Sequence[ApiKey]:
        """Keys in creation order (ids are ULIDs), optionally one team's, paged by id."""
        query = select(ApiKey).order_by(ApiKey.id)
        if team_id is not None:
            query = query.where(ApiKey.team_id == team_id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        if after_id is not None:
            query = query.where(ApiKey.id > after_id)
        if limit is not None:
            query = query.limit(limit)
        return (await self.session.execute(query)).scalars().all()

    async def team(self, team_id: str, *, for_update: bool = False) -> Team | None:
        query = select(Team).where(Team.id == team_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def team_by_name(self, name: str) -> Team | None:
        return (
            await self.session.execute(select(Team).where(Team.name == name))
        ).scalar_one_or_none()

    async def teams(
        self, *, after_id: str | None = None, limit: int | None = None
    ) -> Sequence[Team]:
        """Teams in creation order (ids are ULIDs), paged by id."""
        query = select(Team).order_by(Team.id)
        if after_id is not None:
            query = query.where(Team.id > after_id)
        if limit is not None:
            query = query.limit(limit)
        return (await self.session.execute(query)).scalars().all()

    async def team_names(self, team_ids: Sequence[str]) -> dict[str, str]:
        if not team_ids:
            return {}
        rows = await self.session.execute(
            select(Team.id, Team.name).where(Team.id.in_(set(team_ids)))
        )
        return {row.id: row.name for row in rows}

    def add(self, row: Team | ApiKey) -> None:
        self.session.add(row)
