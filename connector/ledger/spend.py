"""The tier's rolling spend, kept on the account row instead of summed on every purchase.

Account.tier_spend is the sum of the account's entries' purchase_amount dated at or after
Account.tier_spend_since, and tier_spend_oldest the earliest of those dates (None: none).
Every write that dates spend adds to it in the same transaction (`record`), so this holds at
all times and `verify` checks it. For a window starting at W with since <= W <= oldest,
nothing is dated between since and W: the kept sum is the window's spend exactly. Otherwise
(a purchase left the window, or the sum was never taken) it is summed once, from W, and kept.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from connector.ledger.models import Account, Entry

# Built once: an accrual runs it whenever a purchase has left the window.
SUMMED = select(func.coalesce(func.sum(Entry.purchase_amount), 0), func.min(Entry.purchase_at)) \
    .where(Entry.account_id == bindparam("account_id"),
           Entry.purchase_at >= bindparam("start"))


def answers(account: Account, window_start: datetime) -> bool:
    """Whether the kept sum is the spend of the window starting at `window_start`."""
    since, oldest = account.tier_spend_since, account.tier_spend_oldest
    return since is not None and since <= window_start \
        and (oldest is None or oldest >= window_start)


def summed(session: Session, account_id: int, window_start: datetime
           ) -> tuple[int, datetime | None]:
    """The spend dated at or after `window_start`, and the earliest such date."""
    total, oldest = session.connection().execute(
        SUMMED, {"account_id": account_id, "start": window_start}).one()
    return int(total), oldest


# `summed`'s total as a scalar subquery, to be read with other figures (the account view).
WINDOW_SUM = select(func.coalesce(func.sum(Entry.purchase_amount), 0)).where(
    Entry.account_id == bindparam("account_id"),
    Entry.purchase_at >= bindparam("start")).scalar_subquery()


def in_window(session: Session, account: Account, window_start: datetime) -> int:
    """The account's spend in the window starting at `window_start` (hundredths); the
    account row is locked by the caller, which keeps a fresh sum."""
    if not answers(account, window_start):
        total, oldest = summed(session, account.id, window_start)
        account.tier_spend, account.tier_spend_since, account.tier_spend_oldest = \
            total, window_start, oldest
    return account.tier_spend


def start(account: Account, window_start: datetime) -> None:
    """A new account: no spend in any window yet."""
    account.tier_spend, account.tier_spend_since, account.tier_spend_oldest = \
        0, window_start, None


def record(account: Account, amount: int, at: datetime) -> None:
    """An entry dating `amount` of spend (signed, hundredths) at `at` is being written."""
    since = account.tier_spend_since
    if since is None or at < since:
        return
    account.tier_spend += amount
    if account.tier_spend_oldest is None or at < account.tier_spend_oldest:
        account.tier_spend_oldest = at
