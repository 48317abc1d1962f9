"""``jobs``: one image request from admission to its terminal state, plus the worker's lease."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import JsonType
from app.kit.timeutil import utcnow
from app.models.base import Base


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("api_key_id", "idempotency_key"),
        # The worker's claim: "jobs in these stages whose next action is due".
        Index("ix_jobs_stage_next_action_at", "stage", "next_action_at"),
        Index("ix_jobs_team_id_created_at", "team_id", "created_at"),
        Index("ix_jobs_team_id_reuse_key", "team_id", "reuse_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    model: Mapped[str] = mapped_column(String(200))
    input: Mapped[dict[str, Any]] = mapped_column(JsonType)
    request_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))

    status: Mapped[str] = mapped_column(String(20))
    stage: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str | None] = mapped_column(String(50))
    route_plan: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    allow_fallbacks: Mapped[bool] = mapped_column(default=True)
    estimated_cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    actual_cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_provider: Mapped[str | None] = mapped_column(String(50))
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list[str] | None] = mapped_column(JsonType)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonType)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime | None]

    attempt_count: Mapped[int] = mapped_column(default=0)
    poll_errors: Mapped[int] = mapped_column(default=0)
    poll_interval_s: Mapped[float | None]
    event_seq: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    next_action_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None]
    lease_epoch: Mapped[int] = mapped_column(default=0)
    # Result reuse: a seeded job's model + normalised input digest, and the job it reused.
    reuse_key: Mapped[str | None] = mapped_column(String(64))
    reused_from: Mapped[str | None] = mapped_column(String(40), index=True)
