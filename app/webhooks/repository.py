"""All SQL on the client-webhook outbox and on team webhook secrets. Callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import db_now
from app.kit.timeutil import utcnow
from app.models import Team, WebhookDelivery

PENDING, DELIVERED, FAILED, GONE = "pending", "delivered", "failed", "gone"


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    """One claimed try of a delivery; ``attempt`` fences the result (see ``record``)."""

    delivery_id: int
    attempt: int


class DeliveryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- the outbox side (inside a job transition's transaction) -------------------------

    async def enqueue_blocked(self, job_id: str, event: str) -> bool:
        """True when this event is already queued, or the job's URL answered 410 (gone)."""
        query = select(
            exists().where(
                WebhookDelivery.job_id == job_id,
                (WebhookDelivery.event == event) | (WebhookDelivery.state == GONE),
            )
        )
        return bool((await self.session.execute(query)).scalar())

    def add(self, delivery: WebhookDelivery) -> None:
        delivery.next_attempt_at = cast(Any, db_now())  # due now by the database clock
        self.session.add(delivery)

    # --- the worker side ------------------------------------------------------------------

    async def claim_due(self, *, limit: int, lease_s: float) -> list[DeliveryClaim]:
        """Claim due deliveries; each claim counts as a try and leases the row for ``lease_s``."""
        due = (
            select(WebhookDelivery.id)
            .where(WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= db_now())
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(due.scalar_subquery()))
            .values(
                attempts=WebhookDelivery.attempts + 1,
                next_attempt_at=db_now(lease_s),
                updated_at=utcnow(),
            )
            .returning(WebhookDelivery.id, WebhookDelivery.attempts)
            .execution_options(synchronize_session=False)
        )
        return [DeliveryClaim(row_id, attempt) for row_id, attempt in claimed.all()]

    async def get(self, delivery_id: int, *, for_update: bool = False) -> WebhookDelivery | None:
        query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def claimed(self, claim: DeliveryClaim) -> WebhookDelivery | None:
        """The delivery if ``claim`` is still its latest try and it is still pending."""
        delivery = await self.get(claim.delivery_id, for_update=True)
        if delivery is None or delivery.state != PENDING or delivery.attempts != claim.attempt:
            return None
        return delivery

    def retry_in(self, delivery: WebhookDelivery, seconds: float) -> None:
        """Due again ``seconds`` from now by the database clock (written at commit)."""
        delivery.next_attempt_at = cast(Any, db_now(seconds))

    async def stop_job(self, job_id: str, url: str, reason: str) -> None:
        """The receiver answered 410: nothing more goes to this URL for this job."""
        await self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.job_id == job_id,
                WebhookDelivery.url == url,
                WebhookDelivery.state == PENDING,
            )
            .values(state=GONE, next_attempt_at=None, last_error=reason, updated_at=utcnow())
        )

    async def for_job(self, job_id: str) -> Sequence[WebhookDelivery]:
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.id)
        )
        return (await self.session.execute(query)).scalars().all()

    # --- team secrets ---------------------------------------------------------------------

    async def team_secret(self, team_id: str) -> str | None:
        query = select(Team.webhook_secret).where(Team.id == team_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def set_team_secret(self, team_id: str, secret: str, *, only_if_unset: bool) -> None:
        query = update(Team).where(Team.id == team_id).values(webhook_secret=secret)
        if only_if_unset:
            # Concurrent first uses: the first writer wins, the others read its secret.
            query = query.where(Team.webhook_secret.is_(None))
        await self.session.execute(query.execution_options(synchronize_session=False))

    async def team_id_by_name(self, name: str) -> str | None:
        query = select(Team.id).where(Team.name == name)
        return (await self.session.execute(query)).scalar_one_or_none()
