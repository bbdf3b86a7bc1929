"""entries.kind gains 'reward' (points paid for a catalogue reward, a debit) and 'opening'
(a balance brought from elsewhere by an import, a credit)

Both are their own kinds rather than a redemption or a bonus: a reward is not a purchase
paid with points, and an opening balance was not issued by this program, so the
statistics and the economics must be able to tell them apart.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OLD_KINDS = "('accrual', 'redemption', 'reversal', 'expiry', 'adjustment', 'bonus')"
NEW_KINDS = ("('accrual', 'redemption', 'reversal', 'expiry', 'adjustment', 'bonus', 'reward',"
             " 'opening')")
OLD_SIGNS = ("(kind = 'accrual' AND amount >= 0) OR (kind = 'bonus' AND amount > 0)"
             " OR (kind IN ('redemption', 'expiry') AND amount < 0)"
             " OR (kind = 'adjustment' AND amount <> 0) OR kind = 'reversal'")
NEW_SIGNS = ("(kind = 'accrual' AND amount >= 0) OR (kind IN ('bonus', 'opening') AND amount > 0)"
             " OR (kind IN ('redemption', 'expiry', 'reward') AND amount < 0)"
             " OR (kind = 'adjustment' AND amount <> 0) OR kind = 'reversal'")


def _replace(kinds: str, signs: str) -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_entries_kind_known"), type_="check")
        batch_op.drop_constraint(op.f("ck_entries_amount_sign_by_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_entries_kind_known"), f"kind IN {kinds}")
        batch_op.create_check_constraint(op.f("ck_entries_amount_sign_by_kind"), signs)


def upgrade() -> None:
    _replace(NEW_KINDS, NEW_SIGNS)


def downgrade() -> None:
    _replace(OLD_KINDS, OLD_SIGNS)
