"""What staff read about a claimed reward in the CRM (notes, tasks): which reward, its code,
and how to close it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from connector.db import Database
from connector.rewards import models
from connector.triggers import REWARD_CLAIMED, Due

PREFIX = "reward_claim:"


def texts(db: Database, items: Iterable[Due]) -> dict[int, str]:
    """Trigger id -> the text for each reward claim among `items`."""
    wanted = {int(item.transition.removeprefix(PREFIX)): item.id for item in items
              if item.code == REWARD_CLAIMED and item.transition.startswith(PREFIX)}
    if not wanted:
        return {}
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(models.RewardClaim.id, models.RewardClaim.code, models.Reward.name,
                   models.RewardClaim.status)
            .join(models.Reward, models.Reward.id == models.RewardClaim.reward_id)
            .where(models.RewardClaim.id.in_(list(wanted))))
        return {wanted[claim_id]: (
            f"Loyalty: the customer claimed \"{name}\" for points. Hand it over against code "
            f"{code}, then mark it: loyalty-connector rewards handed {code}"
            + ("" if status == "issued" else f" (now {status})"))
            for claim_id, code, name, status in rows}
