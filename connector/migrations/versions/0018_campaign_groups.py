"""campaign_groups: each customer's group (treated or control) in a campaign with a holdout,
a trigger mailing's holdout or an A/B test of the earning rules, written once when first
eligible (UNIQUE campaign, account)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "campaign_groups",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("grp", sa.String(length=8), nullable=False),
        sa.Column("first_seen_at", connector.schema.UTCDateTime(timezone=True),
                  nullable=False),
        sa.CheckConstraint("grp IN ('treated', 'control')",
                           name=op.f("ck_campaign_groups_group_known")),
        sa.CheckConstraint("kind IN ('campaign', 'trigger', 'ab_test')",
                           name=op.f("ck_campaign_groups_kind_known")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_campaign_groups_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_groups")),
        sa.UniqueConstraint("campaign", "account_id", name=op.f("uq_campaign_groups_once")),
    )
    with op.batch_alter_table("campaign_groups", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_groups_campaign_seen", ["campaign", "first_seen_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("campaign_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_groups_campaign_seen")
    op.drop_table("campaign_groups")
