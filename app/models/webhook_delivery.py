"""``webhook_deliveries``: the client-webhook outbox, one row per job event to deliver.

Written in the same transaction as the job transition it reports, delivered by the worker.
``webhook_id`` is the Standard Webhooks ``webhook-id``: the same on every try. ``attempts``
counts claims and fences them (a result is recorded only under the claim that made it);
``next_attempt_at`` is both the retry schedule and the claim's lease.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import JsonType
from app.kit.timeutil import utcnow
from app.models.base import Base, BigIntId, CreatedAt


class WebhookDelivery(CreatedAt, Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "event"),
        # The worker's claim: "pending deliveries that are due".
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(20))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)  # the job document at the event
    state: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed | gone
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    history: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType)  # one entry a try
    delivered_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
