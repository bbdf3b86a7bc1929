"""promo_attachments.settled_at: the accrual marks the purchase settled where it reads the
attached code, so an attach racing the accrual is refused instead of kept unused; code and
via may be empty on such a mark (a CHECK keeps a row one or the other)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promo_attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settled_at", connector.schema.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.alter_column("code", existing_type=sa.String(length=32), nullable=True)
        batch_op.alter_column("via", existing_type=sa.String(length=32), nullable=True)
        batch_op.create_check_constraint(op.f("ck_promo_attachments_code_or_settled"),
                                         "code IS NOT NULL OR settled_at IS NOT NULL")


def downgrade() -> None:
    # Marks without a code go: before this revision a purchase had a row only with a code.
    op.execute("DELETE FROM promo_attachments WHERE code IS NULL")
    with op.batch_alter_table("promo_attachments", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_promo_attachments_code_or_settled"), type_="check")
        batch_op.alter_column("via", existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column("code", existing_type=sa.String(length=32), nullable=False)
        batch_op.drop_column("settled_at")
