"""entries.purchase_at: date spend by the purchase it belongs to

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purchase_at", connector.schema.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index("ix_entries_account_purchase_at", ["account_id", "purchase_at"],
                              unique=False)
    # Until now spend was dated by the entry itself.
    op.execute("UPDATE entries SET purchase_at = occurred_at WHERE purchase_amount IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index("ix_entries_account_purchase_at")
        batch_op.drop_column("purchase_at")
