"""A code given for a purchase before it settles: a Bitrix24 robot or a webhook action on
the deal, an amoCRM pipeline action on the lead. It is checked now (the answer says what it
would give, or why not) and kept with the purchase; the ledger uses it when the deal / lead
is won and accrued, unless the deal's own promo_code field names one."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from sqlalchemy import select

from connector.codes import draw
from connector.codes.models import PromoAttachment
from connector.codes.redeem import Outcome, campaign, upsert
from connector.db import Database
from connector.ledger.engine import Ledger
from connector.ledger.models import Entry
from connector.ledger.views import AccountRef

# What a check prices a code on before the purchase's amount is known; a multiplier's
# points depend on it, so then the answer gives none and says so.
UNPRICED = Decimal("100.00")
SETTLED = "the purchase was already accrued; a code is used when its purchase is accrued"


def attach(db: Database, ledger: Ledger, source: str, raw: str | None, *, ref: AccountRef,
           amount: Decimal | None, via: str) -> Outcome:
    code = draw.normalize(raw)
    if code is None:
        return Outcome(str(raw or "").strip()[:draw.MAX_LENGTH], "unknown",
                       detail="not a promo code (3 to 32 letters and digits)")
    with db.transaction(write=False) as session:
        accrued = session.scalar(select(Entry.id).where(Entry.source == source,
                                                        Entry.kind == "accrual").limit(1))
    if accrued is not None:
        return Outcome(code, "settled", detail=SETTLED)
    priced = amount is not None and amount > 0
    check = ledger.check_promo(code, amount if priced else UNPRICED, ref)
    if check.refused:
        return check
    promo = campaign(ledger.program, check.campaign or "")
    if not priced and promo is not None and promo.multiplier is not None:
        check = replace(check, points=Decimal("0.00"),
                        detail="its points follow the purchase's amount, not known yet")
    # Kept unless the purchase's accrual has marked it settled since the check above (or
    # is marking it now: then this waits for that transaction). A later attach replaces
    # the code, so of two at once the one written last stands.
    table = PromoAttachment.__table__
    with db.transaction() as session:
        saved = upsert(session)(table).values(source=source, code=code, via=via,
                                              created_at=ledger.clock())
        kept = session.scalar(saved.on_conflict_do_update(
            index_elements=[table.c.source],
            set_={"code": saved.excluded.code, "via": saved.excluded.via,
                  "created_at": saved.excluded.created_at},
            where=table.c.settled_at.is_(None)).returning(table.c.source))
    if kept is None:
        return Outcome(code, "settled", check.campaign, detail=SETTLED)
    return check


def used_by(db: Database, source: str) -> Outcome | None:
    """What the purchase's accrual made of a code, once it is accrued."""
    with db.transaction(write=False) as session:
        details = session.scalar(select(Entry.details).where(
            Entry.source == source, Entry.kind == "accrual").order_by(Entry.id).limit(1))
    found = (details or {}).get("promo")
    if not found:
        return None
    return Outcome(found["code"], found["outcome"], found.get("campaign"),
                   Decimal(found.get("points", "0")), found.get("detail", ""))
