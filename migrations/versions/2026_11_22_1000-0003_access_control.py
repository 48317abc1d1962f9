"""access control: a rolled key's previous secret and the end of its grace period

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_secret_hmac", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "previous_secret_expires_at", app.db.UtcDateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_api_keys_previous_secret_hmac"), ["previous_secret_hmac"]
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_api_keys_previous_secret_hmac"), type_="unique")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_hmac")
