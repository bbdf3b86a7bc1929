"""ledger and inbox

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("crm", sa.String(length=16), nullable=False),
        sa.Column("portal", sa.String(length=255), nullable=False),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("card_number", sa.String(length=32), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("overdraft", sa.BigInteger(), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("tier_changed_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("purchase_count", sa.Integer(), nullable=False),
        sa.Column("purchase_total", sa.BigInteger(), nullable=False),
        sa.Column("first_purchase_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_purchase_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column(
            "referred_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("overdraft >= 0", name=op.f("ck_accounts_overdraft_non_negative")),
        sa.CheckConstraint(
            "purchase_count >= 0", name=op.f("ck_accounts_purchase_count_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["referred_by_id"], ["accounts.id"], name=op.f("fk_accounts_referred_by_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("card_number", name=op.f("uq_accounts_card_number")),
        sa.UniqueConstraint("crm", "portal", "contact_id", name="uq_accounts_contact"),
    )
    op.create_table(
        "inbox_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("portal", sa.String(length=255), nullable=True),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'skipped', 'dead')",
            name=op.f("ck_inbox_events_status_known"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_inbox_events_attempts_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_events")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_inbox_events_dedup_key")),
    )
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_due", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("purchase_amount", sa.BigInteger(), nullable=True),
        sa.Column("purchase_count", sa.SmallInteger(), nullable=False),
        sa.Column("shortfall", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("source_data", sa.JSON(), nullable=True),
        sa.Column("occurred_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'accrual' AND amount >= 0) OR (kind = 'bonus' AND amount > 0)"
            " OR (kind IN ('redemption', 'expiry') AND amount < 0)"
            " OR (kind = 'adjustment' AND amount <> 0) OR kind = 'reversal'",
            name=op.f("ck_entries_amount_sign_by_kind"),
        ),
        sa.CheckConstraint(
            "kind IN ('accrual', 'redemption', 'reversal', 'expiry', 'adjustment', 'bonus')",
            name=op.f("ck_entries_kind_known"),
        ),
        sa.CheckConstraint("shortfall >= 0", name=op.f("ck_entries_shortfall_non_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_entries_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_entries_idempotency_key")),
    )
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_entries_account_occurred", ["account_id", "occurred_at"], unique=False
        )
        batch_op.create_index("ix_entries_account_source", ["account_id", "source"], unique=False)
        batch_op.create_index("ix_entries_kind_occurred", ["kind", "occurred_at"], unique=False)

    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("earned_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("available_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_lots_amount_positive")),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name=op.f("ck_lots_remaining_in_bounds")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_lots_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_lots_entry_id_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index("ix_lots_account_earned", ["account_id", "earned_at"], unique=False)
        batch_op.create_index("ix_lots_expires_open", ["expires_at", "remaining"], unique=False)

    op.create_table(
        "allocations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_allocations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_allocations_entry_id_entries")
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"], name=op.f("fk_allocations_lot_id_lots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocations")),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_allocations_entry_id"), ["entry_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_allocations_lot_id"), ["lot_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocations_lot_id"))
        batch_op.drop_index(batch_op.f("ix_allocations_entry_id"))

    op.drop_table("allocations")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index("ix_lots_expires_open")
        batch_op.drop_index("ix_lots_account_earned")

    op.drop_table("lots")
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index("ix_entries_kind_occurred")
        batch_op.drop_index("ix_entries_account_source")
        batch_op.drop_index("ix_entries_account_occurred")

    op.drop_table("entries")
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_due")

    op.drop_table("inbox_events")
    op.drop_table("accounts")
