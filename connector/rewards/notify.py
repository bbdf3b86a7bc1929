"""What staff read about a claimed reward in the CRM (notes, tasks): which reward, its code,
and how to close it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from connector import crm_texts
from connector.db import Database
from connector.i18n import Translator
from connector.rewards import models
from connector.triggers import REWARD_CLAIMED, Due

PREFIX = "reward_claim:"


def texts(db: Database, items: Iterable[Due], t: Translator) -> dict[int, str]:
    """Trigger id -> the text for each reward claim among `items`, in `t`'s language (the
    reward's name as configured)."""
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
        return {wanted[claim_id]: claim_text(code, name, status, t)
                for claim_id, code, name, status in rows}


def claim_text(code: str, name: str, status: str, t: Translator) -> str:
    text = t._("Loyalty: the customer claimed \"%(reward)s\" for points. Hand it over against "
               "code %(code)s, then mark it: %(command)s", reward=name, code=code,
               command=f"loyalty-connector rewards handed {code}")
    if status == "issued":
        return text
    return text + " " + t._("(now %(status)s)", status=crm_texts.claim_status(status, t))
