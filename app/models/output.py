"""``outputs``: the images a job produced, as copied into imagegate's own storage."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, CreatedAt


class Output(CreatedAt, Base):
    __tablename__ = "outputs"
    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        Index("ix_outputs_created_at", "created_at"),  # the retention sweep
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int]
    storage_key: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(40))
    width: Mapped[int]
    height: Mapped[int]
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    upstream_url: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[datetime | None]
