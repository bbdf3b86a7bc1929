"""nps_answers: 0-10 "would you recommend us" answers, one per source event (UNIQUE
source_key), with the record each came from and the bonus entry it earned

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "nps_answers",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("source_key", sa.String(length=255), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("occurred_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("bonus_entry_id", ID, nullable=True),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 10",
                           name=op.f("ck_nps_answers_score_0_to_10")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_nps_answers_account_id_accounts")),
        sa.ForeignKeyConstraint(["bonus_entry_id"], ["entries.id"],
                                name=op.f("fk_nps_answers_bonus_entry_id_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nps_answers")),
        sa.UniqueConstraint("source_key", name=op.f("uq_nps_answers_source_key")),
    )
    with op.batch_alter_table("nps_answers", schema=None) as batch_op:
        batch_op.create_index("ix_nps_answers_occurred", ["occurred_at"], unique=False)
        batch_op.create_index("ix_nps_answers_account_occurred", ["account_id", "occurred_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("nps_answers", schema=None) as batch_op:
        batch_op.drop_index("ix_nps_answers_account_occurred")
        batch_op.drop_index("ix_nps_answers_occurred")
    op.drop_table("nps_answers")
