"""SQL for inbound webhooks: finding the attempt an upstream id belongs to, and replay receipts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Attempt, WebhookReceipt


class InboundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def attempt_by_upstream_id(self, provider: str, upstream_id: str) -> Attempt | None:
        query = (
            select(Attempt)
            .where(Attempt.provider == provider, Attempt.upstream_id == upstream_id)
            .order_by(Attempt.id.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def unconfirmed_attempt(self, provider: str, job_id: str) -> Attempt | None:
        """The job's attempt at ``provider`` whose submit outcome is still unknown."""
        query = (
            select(Attempt)
            .where(
                Attempt.job_id == job_id,
                Attempt.provider == provider,
                Attempt.state.in_(["submitting", "unknown"]),
            )
            .order_by(Attempt.id.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def first_receipt(self, provider: str, event_id: str, job_id: str | None) -> bool:
        """Record an event id; False when it was seen before (a replay)."""
        try:
            async with self.session.begin_nested():
                self.session.add(
                    WebhookReceipt(provider=provider, event_id=event_id, job_id=job_id)
                )
        except IntegrityError:
            return False
        return True
