"""accounts.tier_spend, tier_spend_since, tier_spend_oldest: the tier's rolling spend kept
with the account by the transaction that changes it, instead of summed over the account's
entries on every purchase

tier_spend is the sum of entries.purchase_amount dated at or after tier_spend_since, and
tier_spend_oldest the earliest such date; `verify` checks both against the entries. NULL
since: not known yet, the ledger sums it on the account's next purchase.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tier_spend", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("tier_spend_since",
                                      connector.schema.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("tier_spend_oldest",
                                      connector.schema.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("tier_spend_oldest")
        batch_op.drop_column("tier_spend_since")
        batch_op.drop_column("tier_spend")
