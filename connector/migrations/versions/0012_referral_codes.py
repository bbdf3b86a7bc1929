"""accounts.referral_code for every account; referral_events: what each referral did

Existing accounts get their codes here rather than lazily: a code must be in the CRM field
before marketing mails it, and a lazy fill would need a write on a read path. Their version
is bumped, so the next write-back pass puts the code into every contact (coalesced, batched,
at the CRM's rate). Card numbers are left as they are.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema
from connector.referrals.codes import new_code

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None
CHUNK = 1000


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("referral_code", sa.String(length=16), nullable=True))
    _fill_codes()
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index("ix_accounts_referral_code", ["referral_code"], unique=True)
        batch_op.create_index("ix_accounts_referred_by_id", ["referred_by_id"], unique=False)
    op.create_table(
        "referral_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("referrer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=True),
        sa.Column("code", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("via", sa.String(length=32), nullable=True),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_referral_events_account_id_accounts")),
        sa.ForeignKeyConstraint(["referrer_id"], ["accounts.id"],
                                name=op.f("fk_referral_events_referrer_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_events")),
    )
    with op.batch_alter_table("referral_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_referral_events_account_id"), ["account_id"],
                              unique=False)


def _fill_codes() -> None:
    """A distinct random code per existing account, in chunks (plain UPDATEs: the same on
    SQLite and PostgreSQL)."""
    accounts = sa.table("accounts", sa.column("id", sa.Integer), sa.column("version"),
                        sa.column("referral_code", sa.String))
    bind = op.get_bind()
    ids = [row[0] for row in bind.execute(sa.select(accounts.c.id).order_by(accounts.c.id))]
    used: set[str] = set()
    update = (accounts.update().where(accounts.c.id == sa.bindparam("account_id"))
              .values(referral_code=sa.bindparam("code"), version=accounts.c.version + 1))
    for start in range(0, len(ids), CHUNK):
        rows = []
        for account_id in ids[start:start + CHUNK]:
            code = new_code()
            while code in used:
                code = new_code()
            used.add(code)
            rows.append({"account_id": account_id, "code": code})
        bind.execute(update, rows)


def downgrade() -> None:
    with op.batch_alter_table("referral_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referral_events_account_id"))
    op.drop_table("referral_events")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_accounts_referred_by_id")
        batch_op.drop_index("ix_accounts_referral_code")
        batch_op.drop_column("referral_code")
