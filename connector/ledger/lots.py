"""Moving points in and out of lots. Callers hold the account's lock.

Invariant: account.balance == sum(lot.remaining) - account.overdraft, and an account with an
overdraft has no lot with points left (credits pay the overdraft first, debits empty lots first).

Lots and allocations are written with Core statements, not the unit of work: they are plain
rows nobody holds as objects during an operation (expiry's debit_lot excepted).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from connector.ledger.models import Account, Allocation, Entry, Lot

# Built once, not per call: building a statement and its cache key cost as much CPU as
# running it. Executed on the session's connection: plain rows, no ORM loading.
_WITH_POINTS = select(Lot.id, Lot.entry_id, Lot.remaining).where(
    Lot.account_id == bindparam("account_id"), Lot.remaining > 0)
OPEN_LOTS = _WITH_POINTS.order_by(Lot.earned_at, Lot.id)
SPENDABLE_LOTS = _WITH_POINTS.where(Lot.available_at <= bindparam("at")) \
    .order_by(Lot.earned_at, Lot.id)
INSERT_LOT = insert(Lot.__table__)
SPEND_FROM_LOT = update(Lot.__table__).where(Lot.__table__.c.id == bindparam("lot_id")) \
    .values(remaining=bindparam("left"))
INSERT_ALLOCATIONS = insert(Allocation.__table__)


@dataclass(slots=True)
class Open:
    """A lot with points left, as a debit needs it."""

    id: int
    entry_id: int
    remaining: int


def credit(session: Session, account: Account, entry: Entry, points: int, *,
           earned_at: datetime, available_at: datetime, expires_at: datetime | None) -> None:
    paid = min(account.overdraft, points)
    account.overdraft -= paid
    rest = points - paid
    if rest > 0:
        session.connection().execute(INSERT_LOT, dict(
            account_id=account.id, entry_id=entry.id, amount=rest, remaining=rest,
            earned_at=earned_at, available_at=available_at, expires_at=expires_at))


def open_lots(session: Session, account: Account, *,
              spendable_at: datetime | None = None) -> list[Open]:
    """The account's lots with points left, oldest first; spendable_at: only those available
    by then (redemptions skip pending points)."""
    rows = session.connection().execute(
        OPEN_LOTS if spendable_at is None else SPENDABLE_LOTS,
        {"account_id": account.id, "at": spendable_at})
    return [Open(*row) for row in rows]


def debit(session: Session, account: Account, entry: Entry, points: int, *,
          spendable_at: datetime | None = None, prefer: Collection[int] = (),
          lots: Sequence[Open] | None = None) -> int:
    """Take up to `points` from the account's lots, oldest first, and return what was taken.

    spendable_at: only lots available by then (redemptions skip pending points).
    prefer: entry ids whose own lots go first (a reversal takes back its own points first).
    lots: the open lots when the caller already read them (open_lots, same filter).
    """
    if lots is None:
        lots = open_lots(session, account, spendable_at=spendable_at)
    ordered = sorted(lots, key=lambda lot: lot.entry_id not in prefer)  # stable: FIFO
    taken = 0
    spent: list[dict[str, int]] = []
    allocations: list[dict[str, int]] = []
    for lot in ordered:
        if taken == points:
            break
        part = min(lot.remaining, points - taken)
        lot.remaining -= part
        taken += part
        spent.append({"lot_id": lot.id, "left": lot.remaining})
        allocations.append({"entry_id": entry.id, "lot_id": lot.id, "amount": part})
    if spent:
        connection = session.connection()
        connection.execute(SPEND_FROM_LOT, spent)
        connection.execute(INSERT_ALLOCATIONS, allocations)
    return taken


def spendable(session: Session, account: Account, now: datetime) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(Lot.remaining), 0))
        .where(Lot.account_id == account.id, Lot.remaining > 0, Lot.available_at <= now))
    return int(total) - account.overdraft


def consumed_lots(session: Session, entry_ids: Collection[int]) -> list[tuple[Lot, int]]:
    """The lots the given debit entries took points from, latest-expiring first."""
    if not entry_ids:
        return []
    rows = session.execute(
        select(Lot, Allocation.amount)
        .join(Allocation, Allocation.lot_id == Lot.id)
        .where(Allocation.entry_id.in_(list(entry_ids)))
        .order_by(Lot.earned_at.desc(), Lot.id.desc()))
    return [(lot, int(amount)) for lot, amount in rows]


def debit_lot(session: Session, entry: Entry, lot: Lot) -> None:
    """Empty one lot into `entry` (expiry)."""
    session.add(Allocation(entry_id=entry.id, lot_id=lot.id, amount=lot.remaining))
    lot.remaining = 0
