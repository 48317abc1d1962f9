"""``ledger``: budget movements per job. A balance is a SUM over these rows, never a stored total.

Each job gets at most one row of each kind (the unique constraint makes replays harmless):

- ``reserve``  +estimate, written in the admission transaction;
- ``refund``   -reserve, when the job ends (whatever the outcome, the hold is released);
- ``settle``   +actual cost, when the job completes.

So for a team and month, SUM(amount) is what is committed (spent + still held), SUM over
``settle`` rows is what was spent. ``job_id`` deliberately has no foreign key: the ledger is the
financial record and must outlive any retention that deletes job rows.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, CreatedAt

LEDGER_KINDS = ("reserve", "settle", "refund")


class LedgerEntry(CreatedAt, Base):
    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("job_id", "kind"),
        CheckConstraint("kind IN ('reserve', 'settle', 'refund')", name="kind"),
        CheckConstraint(
            "(kind = 'refund' AND amount_micros <= 0) OR (kind <> 'refund' AND amount_micros >= 0)",
            name="amount_sign",
        ),
        # Covers the admission check (team, month -> SUM by key): an index-only scan.
        Index("ix_ledger_team_id_month", "team_id", "month", "api_key_id", "amount_micros"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(10))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    month: Mapped[str] = mapped_column(String(7))  # "2026-11": the UTC month the job was admitted
