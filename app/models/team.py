"""``teams``: who pays. A team owns API keys and jobs, and may have a monthly budget."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class Team(CreatedAt, Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    monthly_budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    # Signs the team's client webhooks (Standard Webhooks); created when first needed.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
