"""promo codes: promo_campaigns (budget and uses), promo_codes, promo_redemptions (one use
per code and purchase, one n-th use per customer and campaign), promo_attachments (a code
given for a purchase before it settles)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "promo_campaigns",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("granted", sa.BigInteger(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.CheckConstraint("granted >= 0", name=op.f("ck_promo_campaigns_granted_non_negative")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_promo_campaigns")),
    )
    op.create_table(
        "promo_codes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("uses >= 0", name=op.f("ck_promo_codes_uses_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promo_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_promo_codes_code")),
    )
    with op.batch_alter_table("promo_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_promo_codes_campaign"), ["campaign"], unique=False)
    op.create_table(
        "promo_redemptions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("code_id", BIG_ID, nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("nth", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("entry_id", BIG_ID, nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points >= 0", name=op.f("ck_promo_redemptions_points_non_negative")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_promo_redemptions_account_id_accounts")),
        sa.ForeignKeyConstraint(["code_id"], ["promo_codes.id"],
                                name=op.f("fk_promo_redemptions_code_id_promo_codes")),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"],
                                name=op.f("fk_promo_redemptions_entry_id_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promo_redemptions")),
        sa.UniqueConstraint("code_id", "source", name="uq_promo_redemptions_code_source"),
        sa.UniqueConstraint("campaign", "account_id", "nth", name="uq_promo_redemptions_nth"),
    )
    with op.batch_alter_table("promo_redemptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_promo_redemptions_account_id"), ["account_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_promo_redemptions_created_at"), ["created_at"],
                              unique=False)
    op.create_table(
        "promo_attachments",
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("via", sa.String(length=32), nullable=False),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_promo_attachments")),
    )


def downgrade() -> None:
    op.drop_table("promo_attachments")
    with op.batch_alter_table("promo_redemptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promo_redemptions_created_at"))
        batch_op.drop_index(batch_op.f("ix_promo_redemptions_account_id"))
    op.drop_table("promo_redemptions")
    with op.batch_alter_table("promo_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promo_codes_campaign"))
    op.drop_table("promo_codes")
    op.drop_table("promo_campaigns")
