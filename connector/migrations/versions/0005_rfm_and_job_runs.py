"""accounts.rfm and accounts.segment; job_runs: what each scheduled job did last

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rfm", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("segment", sa.String(length=32), nullable=True))
    op.create_table(
        "job_runs",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_started_at", connector.schema.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column("last_finished_at", connector.schema.UTCDateTime(timezone=True),
                  nullable=True),
        sa.Column("last_duration_seconds", sa.Float(), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=False),
        sa.Column("last_result", sa.JSON(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_runner", sa.String(length=128), nullable=True),
        sa.CheckConstraint("last_status IN ('running', 'ok', 'failed')",
                           name=op.f("ck_job_runs_status_known")),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_runs")),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("segment")
        batch_op.drop_column("rfm")
