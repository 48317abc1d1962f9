"""``api_keys``: a team's keys. Only an HMAC of the secret is stored, never the secret."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import JsonType
from app.models.base import Base, CreatedAt


class ApiKey(CreatedAt, Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings: "ig_AbC12345"
    secret_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JsonType)
    rate_limit_per_minute: Mapped[int | None]
    rate_limit_burst: Mapped[int | None]
    monthly_budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # After a roll, the old secret's HMAC and when it stops working (the grace period's end).
    previous_secret_hmac: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_secret_expires_at: Mapped[datetime | None]
