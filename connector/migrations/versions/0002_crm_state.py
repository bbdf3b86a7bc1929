"""crm state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_credentials",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("crm", sa.String(length=16), nullable=False),
        sa.Column("portal", sa.String(length=255), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=True),
        sa.Column("endpoint", sa.String(length=512), nullable=True),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("expires_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("application_token", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'revoked')", name=op.f("ck_crm_credentials_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_credentials")),
        sa.UniqueConstraint("crm", "portal", name="uq_crm_credentials_portal"),
    )
    op.create_table(
        "sync_cursors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("crm", sa.String(length=16), nullable=False),
        sa.Column("portal", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("updated_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_cursors")),
        sa.UniqueConstraint("crm", "portal", "name", name="uq_sync_cursors_name"),
    )
    op.create_table(
        "contact_mirror",
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("written_version", sa.Integer(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("latest_deal_id", sa.String(length=64), nullable=True),
        sa.Column("written_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_contact_mirror_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_contact_mirror")),
    )
    op.create_table(
        "trigger_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("transition", sa.String(length=255), nullable=False),
        sa.Column("deal_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", connector.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", connector.schema.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'skipped', 'failed')",
            name=op.f("ck_trigger_events_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_trigger_events_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_events")),
        sa.UniqueConstraint("account_id", "code", "transition", name="uq_trigger_events_once"),
    )
    with op.batch_alter_table("trigger_events", schema=None) as batch_op:
        batch_op.create_index("ix_trigger_events_due", ["status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trigger_events", schema=None) as batch_op:
        batch_op.drop_index("ix_trigger_events_due")

    op.drop_table("trigger_events")
    op.drop_table("contact_mirror")
    op.drop_table("sync_cursors")
    op.drop_table("crm_credentials")
