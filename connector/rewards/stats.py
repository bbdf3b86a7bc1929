"""Rewards in the program's figures: claims made in a period (those cancelled since left
out), the points they took, and the claims still to hand over now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from connector.money import from_minor
from connector.rewards.models import RewardClaim


@dataclass(frozen=True)
class RewardFigures:
    claimed: int
    points: Decimal
    open: int


def in_period(session: Session, since: datetime, until: datetime) -> RewardFigures:
    standing = RewardClaim.status != "cancelled"
    in_window = (RewardClaim.created_at >= since) & (RewardClaim.created_at < until)
    row = session.execute(select(
        func.coalesce(func.sum(case((in_window & standing, 1), else_=0)), 0),
        func.coalesce(func.sum(case((in_window & standing, RewardClaim.cost), else_=0)), 0),
        func.coalesce(func.sum(case((RewardClaim.status == "issued", 1), else_=0)), 0),
    )).one()
    claimed, points, still_open = (int(value) for value in row)
    return RewardFigures(claimed, from_minor(points), still_open)
