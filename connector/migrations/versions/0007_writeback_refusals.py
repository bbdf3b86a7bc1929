"""contact_mirror.refused_at and refused_error: a contact the CRM refused for good

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_mirror", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refused_at", connector.schema.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("refused_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact_mirror", schema=None) as batch_op:
        batch_op.drop_column("refused_error")
        batch_op.drop_column("refused_at")
