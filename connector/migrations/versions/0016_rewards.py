"""rewards: the catalogue ([[program.rewards]] and the API); reward_claims: who claimed what,
with the code staff hand it over against

The stock left is a column guarded by a CHECK (>= 0) and taken with a conditional UPDATE, so
two claims of the last one cannot both stand, on SQLite or PostgreSQL.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rewards",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("slug", sa.String(length=48), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("stock_left", sa.Integer(), nullable=True),
        sa.Column("per_customer", sa.Integer(), nullable=True),
        sa.Column("min_tier", sa.String(length=64), nullable=True),
        sa.Column("starts_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ends_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("cost > 0", name=op.f("ck_rewards_cost_positive")),
        sa.CheckConstraint("stock_left >= 0", name=op.f("ck_rewards_stock_left_non_negative")),
        sa.CheckConstraint("origin IN ('config', 'api')", name=op.f("ck_rewards_origin_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
        sa.UniqueConstraint("slug", name=op.f("uq_rewards_slug")),
    )
    op.create_table(
        "reward_claims",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("reward_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", ID, nullable=False),
        sa.Column("cancel_entry_id", ID, nullable=True),
        sa.Column("via", sa.String(length=32), nullable=False),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handed_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('issued', 'handed', 'cancelled')",
                           name=op.f("ck_reward_claims_status_known")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_reward_claims_account_id_accounts")),
        sa.ForeignKeyConstraint(["cancel_entry_id"], ["entries.id"],
                                name=op.f("fk_reward_claims_cancel_entry_id_entries")),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"],
                                name=op.f("fk_reward_claims_entry_id_entries")),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"],
                                name=op.f("fk_reward_claims_reward_id_rewards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_claims")),
        sa.UniqueConstraint("code", name=op.f("uq_reward_claims_code")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_reward_claims_entry_id")),
    )
    with op.batch_alter_table("reward_claims", schema=None) as batch_op:
        batch_op.create_index("ix_reward_claims_account_reward", ["account_id", "reward_id"],
                              unique=False)
        batch_op.create_index("ix_reward_claims_status", ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reward_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_claims_status")
        batch_op.drop_index("ix_reward_claims_account_reward")
    op.drop_table("reward_claims")
    op.drop_table("rewards")
