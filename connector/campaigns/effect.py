"""The campaign effect in `stats`: the campaigns with a control group that ended in the
period, the revenue they brought beyond what their control groups bought, and their cost."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from connector.campaigns.report import compare, ended
from connector.i18n import DASH, Translator
from connector.program import Program


def campaign_effect(session: Session, program: Program, since: datetime,
                    until: datetime) -> dict[str, Any]:
    """{"campaigns", "incremental_revenue" (None: none ended, or none had both groups),
    "cost"}, money as strings (stats' JSON)."""
    reports = [compare(session, program, test, until)
               for test in ended(program, since, until)]
    measured = [r.incremental_revenue for r in reports if r.incremental_revenue is not None]
    cost = sum((r.cost for r in reports), Decimal("0.00"))
    return {"campaigns": len(reports),
            "incremental_revenue": str(sum(measured, Decimal("0.00"))) if measured else None,
            "cost": str(cost)}


def effect_row(effect: dict[str, Any], t: Translator) -> tuple[str, str]:
    """The line `stats` prints for it."""
    if not effect.get("campaigns"):
        return t._("campaigns"), t._("no campaign with a control group ended")
    revenue = effect.get("incremental_revenue")
    return t._("campaigns"), t._(
        "%(count)s ended: incremental revenue %(revenue)s, cost %(cost)s",
        count=t.number(effect["campaigns"]),
        revenue=DASH if revenue is None else t.number(Decimal(revenue), 2),
        cost=t.number(Decimal(effect["cost"]), 2))
