"""Per-team webhook secrets (``whsec_`` + base64 of 32 random bytes, Standard Webhooks' format).

A team's secret is created the first time the team needs one (its first webhook event, or an
operator asking for it) and is the same for every job of the team, so a receiver configures it
once. Operators show or rotate it with ``imagegate webhooks secret --team NAME [--rotate]``.
A rotation takes effect for every delivery sent after it, including retries of older events.
"""

from __future__ import annotations

import base64
import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks.repository import DeliveryRepository

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


async def team_webhook_secret(session: AsyncSession, team_id: str) -> str:
    """The team's secret, created now if it has none yet. The caller commits."""
    repo = DeliveryRepository(session)
    current = await repo.team_secret(team_id)
    if current is not None:
        return current
    await repo.set_team_secret(team_id, new_secret(), only_if_unset=True)
    created = await repo.team_secret(team_id)
    if created is None:
        raise LookupError(f"no team {team_id}")
    return created


async def rotate_team_webhook_secret(session: AsyncSession, team_id: str) -> str:
    """Replace the team's secret. The caller commits."""
    secret = new_secret()
    await DeliveryRepository(session).set_team_secret(team_id, secret, only_if_unset=False)
    return secret
