"""Writing customers' groups down: once per test, when the customer is first eligible."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.campaigns.groups import CONTROL, Group, group
from connector.campaigns.models import CampaignGroup
from connector.config import ProgramSettings, TriggerHoldout


def place(session: Session, name: str, kind: str, account_id: int, grp: Group, *,
          at: datetime) -> bool:
    """Record the customer's group in test `name` unless already recorded; True when new.
    Callers hold the account's row lock (a purchase) or catch the UNIQUE violation of a
    concurrent writer (a trigger), so a customer is written once."""
    known = session.scalar(select(CampaignGroup.id).where(
        CampaignGroup.campaign == name, CampaignGroup.account_id == account_id))
    if known is not None:
        return False
    session.add(CampaignGroup(campaign=name, kind=kind, account_id=account_id, grp=grp,
                              first_seen_at=at))
    session.flush()
    return True


def trigger_holdout(program: ProgramSettings, code: str) -> TriggerHoldout | None:
    return next((h for h in program.trigger_holdouts if h.trigger == code), None)


def withheld(program: ProgramSettings, session: Session, code: str, account_id: int,
             at: datetime) -> bool:
    """For a trigger with a control group: place the customer (at the trigger's moment) and
    say whether the trigger is withheld from them."""
    holdout = trigger_holdout(program, code)
    if holdout is None:
        return False
    grp = group(code, account_id, holdout.holdout)
    place(session, code, "trigger", account_id, grp, at=at)
    return grp == CONTROL
