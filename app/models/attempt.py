"""``attempts``: one row per upstream submission of a job (failover makes more than one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import JsonType
from app.models.base import Base, BigIntId, CreatedAt


class Attempt(CreatedAt, Base):
    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_provider_upstream_id", "provider", "upstream_id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(50))
    upstream_model: Mapped[str] = mapped_column(String(200))
    upstream_id: Mapped[str | None] = mapped_column(String(200))
    handle: Mapped[dict[str, str] | None] = mapped_column(JsonType)
    state: Mapped[str] = mapped_column(String(20))
    submitted_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    poll_count: Mapped[int] = mapped_column(default=0)
    next_poll_at: Mapped[datetime | None]
    last_upstream_status: Mapped[str | None] = mapped_column(String(60))
    outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    reported_cost_micros: Mapped[int | None] = mapped_column(BigInteger)
