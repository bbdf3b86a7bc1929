"""Promo codes as an admin sees them: draw a batch, export it, who used a code, a
campaign's summary, and the figures `stats` shows for a period."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import IO, Any

from sqlalchemy import Integer, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.codes import draw
from connector.codes.models import PromoCampaign, PromoCode, PromoRedemption
from connector.codes.redeem import campaign
from connector.config import Promo
from connector.db import Database
from connector.errors import LedgerError
from connector.ledger.models import Account
from connector.money import from_minor
from connector.program import Program

CHUNK = 1000  # codes per INSERT
ATTEMPTS = 5  # draws of a chunk that collided with a code already there


def known_campaign(program: Program, name: str) -> Promo:
    promo = campaign(program, name)
    if promo is None:
        known = ", ".join(p.name for p in program.settings.promo) or "none"
        raise LedgerError(f"no promo campaign {name!r} in [[program.promo]] (known: {known})")
    return promo


def generate(db: Database, program: Program, name: str, count: int, *,
             now: datetime) -> list[str]:
    """Draw `count` new unique codes for campaign `name`; each chunk is one transaction,
    drawn again whole on the rare collision with a code already stored."""
    known_campaign(program, name)
    if not 1 <= count <= 1_000_000:
        raise LedgerError("--count must be between 1 and 1000000")
    made: list[str] = []
    while len(made) < count:
        size = min(CHUNK, count - len(made))
        for _ in range(ATTEMPTS):
            codes = list({draw.new_code() for _ in range(size)})
            try:
                with db.transaction() as session:
                    session.execute(insert(PromoCode), [
                        {"campaign": name, "code": code, "shared": False, "uses": 0,
                         "created_at": now} for code in codes])
                made += codes
                break
            except IntegrityError:
                continue
        else:
            raise LedgerError("codes drawn kept colliding with stored ones; try again")
    return made


def export(db: Database, name: str, out: IO[str]) -> int:
    """CSV of a campaign's generated codes (printed form), with their uses so far."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["campaign", "code", "uses", "created_at"])
    rows = 0
    with db.transaction(write=False) as session:
        for code, uses, created in session.execute(
                select(PromoCode.code, PromoCode.uses, PromoCode.created_at)
                .where(PromoCode.campaign == name, PromoCode.shared.is_(False))
                .order_by(PromoCode.id).execution_options(yield_per=CHUNK)):
            writer.writerow([name, draw.printed(code), uses, created.isoformat()])
            rows += 1
    return rows


@dataclass(frozen=True)
class Use:
    crm: str
    portal: str
    contact_id: str
    source: str
    points: Decimal
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"crm": self.crm, "portal": self.portal, "contact_id": self.contact_id,
                "source": self.source, "points": str(self.points), "at": self.at.isoformat()}


@dataclass(frozen=True)
class CodeView:
    code: str
    campaign: str
    shared: bool
    uses: int
    uses_left: int | None
    created_at: datetime | None
    used_by: list[Use] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"code": draw.printed(self.code), "campaign": self.campaign,
                "shared": self.shared, "uses": self.uses, "uses_left": self.uses_left,
                "created_at": self.created_at.isoformat() if self.created_at else None,
                "used_by": [use.as_json() for use in self.used_by]}


def show(db: Database, program: Program, raw: str) -> CodeView:
    code = draw.normalize(raw)
    if code is None:
        raise LedgerError(f"{raw!r} is not a promo code (3 to 32 letters and digits)")
    with db.transaction(write=False) as session:
        row = session.scalar(select(PromoCode).where(PromoCode.code == code))
        if row is None:
            promo = next((p for p in program.settings.promo if p.code == code), None)
            if promo is None:
                raise LedgerError(f"no promo code {code}")
            return CodeView(code, promo.name, True, 0, promo.shared_code_uses or None, None)
        promo = campaign(program, row.campaign)
        limit = (promo.shared_code_uses if row.shared else promo.uses_per_code) if promo \
            else 0
        uses = [Use(*found, from_minor(points), at) for *found, points, at in session.execute(
            select(Account.crm, Account.portal, Account.contact_id, PromoRedemption.source,
                   PromoRedemption.points, PromoRedemption.created_at)
            .join(Account, Account.id == PromoRedemption.account_id)
            .where(PromoRedemption.code_id == row.id).order_by(PromoRedemption.id))]
        return CodeView(code, row.campaign, row.shared, row.uses,
                        max(limit - row.uses, 0) if limit else None, row.created_at, uses)


@dataclass(frozen=True)
class Summary:
    campaign: str
    grants: str
    window: str
    codes: int
    codes_used: int
    uses: int
    customers: int
    points_granted: Decimal
    budget: Decimal | None

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "grants": self.grants, "window": self.window,
                "codes": self.codes, "codes_used": self.codes_used, "uses": self.uses,
                "customers": self.customers, "points_granted": str(self.points_granted),
                "budget": None if self.budget is None else str(self.budget)}


def _grants(promo: Promo) -> str:
    if promo.points is not None:
        return f"{promo.points} points"
    if promo.bonus is not None:
        return f"bonus {promo.bonus}"
    return f"x{promo.multiplier} the purchase's points"


def summary(db: Database, program: Program, name: str) -> Summary:
    promo = known_campaign(program, name)
    with db.transaction(write=False) as session:
        codes, used = session.execute(select(
            func.count(), func.coalesce(func.sum((PromoCode.uses > 0).cast(Integer)), 0))
            .where(PromoCode.campaign == name, PromoCode.shared.is_(False))).one()
        totals = session.get(PromoCampaign, name)
        customers = session.scalar(select(func.count(func.distinct(PromoRedemption.account_id)))
                                   .where(PromoRedemption.campaign == name)) or 0
    window = "valid any time" if not (promo.starts or promo.ends) else " ".join(filter(None, [
        f"valid from {promo.starts:%Y-%m-%d %H:%M}" if promo.starts else "valid",
        f"until {promo.ends:%Y-%m-%d %H:%M}" if promo.ends else None]))
    return Summary(name, _grants(promo), window, int(codes), int(used),
                   totals.uses if totals else 0, int(customers),
                   from_minor(totals.granted if totals else 0),
                   promo.budget if promo.budget else None)


def in_period(session: Session, since: datetime, until: datetime) -> tuple[int, Decimal]:
    """Codes used and points they granted in [since, until)."""
    count, points = session.execute(select(
        func.count(), func.coalesce(func.sum(PromoRedemption.points), 0)).where(
        PromoRedemption.created_at >= since, PromoRedemption.created_at < until)).one()
    return int(count), from_minor(int(points))


def lines(view: CodeView, zone: tzinfo) -> Iterator[str]:
    """The text of `codes show`, times in `zone` (the program's, as other commands print)."""
    left = "no limit" if view.uses_left is None else f"{view.uses_left} left"
    kind = "shared code" if view.shared else "code"
    yield f"{kind} {draw.printed(view.code)} of campaign {view.campaign}: used {view.uses} " \
          f"time(s), {left}"
    for use in view.used_by:
        yield f"  {use.at.astimezone(zone):%Y-%m-%d %H:%M}  {use.crm} {use.portal} contact " \
              f"{use.contact_id}  {use.points} points  ({use.source})"
