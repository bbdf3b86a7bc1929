"""RFM segments: recency, frequency and monetary scores and the named segment they give.

Scores are quintiles (1-5, 5 best) over the customers who bought within `rfm.active_days`,
so they adapt to each business: a cafe's "frequent" is not a repair shop's. Ties get the same
score (the mid-rank of the tied group decides), so a score never depends on row order.
Customers whose last purchase is older are "lost"; contacts that never bought get none.

Segments, first match wins (FM is the rounded-up mean of F and M):
  new              one purchase so far, R >= 3 (with R <= 2: hibernating)
  champions        R >= 4 and FM >= 4
  loyal            R >= 3 and FM >= 3
  at_risk          R <= 2 and FM >= 3   (good customers drifting away: win them back)
  hibernating      R <= 2
  promising        R >= 4
  needs_attention  the rest (R = 3, low FM)
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update

from connector.db import Database
from connector.ledger.models import Account

log = logging.getLogger(__name__)
QUINTILES = 5


@dataclass(frozen=True)
class Customer:
    account_id: int
    last_purchase_at: datetime | None
    purchase_count: int
    purchase_total: int


@dataclass(frozen=True)
class Score:
    rfm: str | None
    segment: str | None


def quintile_scores(values: Sequence[float | int]) -> list[int]:
    """1-5 by the mid-rank of each value among all values (larger is better)."""
    ordered = sorted(values)
    count = len(ordered)
    scores = []
    for value in values:
        below = bisect_left(ordered, value)
        tied = bisect_right(ordered, value) - below
        # mid-rank in [0, 1): the share of values below plus half the tied group.
        scores.append(min(QUINTILES, 1 + (2 * below + tied) * QUINTILES // (2 * count)))
    return scores


def segment_of(r: int, f: int, m: int, purchase_count: int) -> str:
    fm = (f + m + 1) // 2
    if purchase_count == 1:  # one purchase tells nothing of loyalty yet
        return "new" if r >= 3 else "hibernating"
    if r >= 4 and fm >= 4:
        return "champions"
    if r >= 3 and fm >= 3:
        return "loyal"
    if r <= 2:
        return "at_risk" if fm >= 3 else "hibernating"
    return "promising" if r >= 4 else "needs_attention"


def score(customers: Sequence[Customer], now: datetime, active_days: int) -> dict[int, Score]:
    """Every customer's scores and segment as of `now`."""
    since = now - timedelta(days=active_days)
    active = [c for c in customers if c.purchase_count > 0 and c.last_purchase_at is not None
              and c.last_purchase_at >= since]
    found = {c.account_id: Score(None, None if c.purchase_count <= 0 else "lost")
             for c in customers}
    if not active:
        return found
    # Recency in whole days ago (same-day buyers tie), negated: more recent ranks higher.
    recency = quintile_scores([-(now - c.last_purchase_at).days
                               for c in active if c.last_purchase_at is not None])
    frequency = quintile_scores([c.purchase_count for c in active])
    monetary = quintile_scores([c.purchase_total for c in active])
    for customer, r, f, m in zip(active, recency, frequency, monetary, strict=True):
        found[customer.account_id] = Score(f"{r}{f}{m}",
                                           segment_of(r, f, m, customer.purchase_count))
    return found


@dataclass(frozen=True)
class RFMReport:
    scored: int
    changed: int
    sizes: dict[str, int]


def update_segments(db: Database, now: datetime, active_days: int,
                    *, chunk: int = 1000) -> RFMReport:
    """Score everyone and store what changed. A changed segment bumps the account's version,
    so write-back shows it in the CRM; running twice changes nothing the second time."""
    with db.transaction(write=False) as session:
        rows = list(session.execute(select(
            Account.id, Account.last_purchase_at, Account.purchase_count,
            Account.purchase_total, Account.rfm, Account.segment)))
    scores = score([Customer(*row[:4]) for row in rows], now, active_days)
    changes = [{"account_id": account_id, "new_rfm": scores[account_id].rfm,
                "new_segment": scores[account_id].segment}
               for account_id, *_, rfm, segment in rows
               if (rfm, segment) != (scores[account_id].rfm, scores[account_id].segment)]
    statement = (update(Account).where(Account.id == bindparam("account_id"))
                 .values(rfm=bindparam("new_rfm"), segment=bindparam("new_segment"),
                         version=Account.version + 1)
                 .execution_options(synchronize_session=False))
    for start in range(0, len(changes), chunk):
        with db.transaction() as session:
            session.connection().execute(statement, changes[start:start + chunk])
    sizes: dict[str, int] = {}
    for result in scores.values():
        if result.segment is not None:
            sizes[result.segment] = sizes.get(result.segment, 0) + 1
    return RFMReport(scored=sum(1 for s in scores.values() if s.rfm), changed=len(changes),
                     sizes=dict(sorted(sizes.items())))
