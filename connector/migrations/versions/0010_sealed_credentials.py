"""crm_credentials: access, refresh and application tokens sealed with the secret key

Tokens stored in clear are sealed here (and opened again on downgrade) with the key that
`Database.upgrade(sealer=...)` hands over; application_token becomes Text, since a sealed
value is longer than the token.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TOKENS = ("access_token", "refresh_token", "application_token")
credentials = sa.table("crm_credentials", sa.column("id", sa.BigInteger),
                       *(sa.column(name, sa.Text) for name in TOKENS))


def upgrade() -> None:
    with op.batch_alter_table("crm_credentials", schema=None) as batch_op:
        batch_op.alter_column("application_token", existing_type=sa.String(length=255),
                              type_=sa.Text(), existing_nullable=True)
    _each_token(lambda sealer: sealer.seal)


def downgrade() -> None:
    _each_token(lambda sealer: sealer.open)
    with op.batch_alter_table("crm_credentials", schema=None) as batch_op:
        batch_op.alter_column("application_token", existing_type=sa.Text(),
                              type_=sa.String(length=255), existing_nullable=True)


def _each_token(change: Callable[[object], Callable[[str | None], str | None]]) -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(credentials).order_by(credentials.c.id)).all()
    if not rows:
        return
    sealer = context.config.attributes.get("sealer")
    if sealer is None:
        raise RuntimeError("crm_credentials holds tokens: migrate through "
                           "`loyalty-connector db upgrade`, which brings the secret key")
    apply = change(sealer)
    for row in rows:
        connection.execute(credentials.update().where(credentials.c.id == row.id).values(
            {name: apply(getattr(row, name)) for name in TOKENS}))
