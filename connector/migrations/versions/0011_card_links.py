"""card_links: the salt and token hash of each account's card page link

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_links",
        sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("rotations", sa.Integer(), nullable=False),
        sa.Column("issued_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_card_links_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_card_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_card_links_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("card_links")
