"""Using a promo code on a purchase, inside the ledger's transaction (the account row is
locked), and checking one without using it (a preview).

Limits are enforced by the database, so two purchases racing for the last use or the last
points of a budget cannot both get them: the campaign's budget and each code's uses move by
a conditional UPDATE (`... WHERE granted + x <= budget`, `... WHERE uses < limit`) that
touches no row when the limit is reached; a purchase uses a code once (UNIQUE code, source)
and a customer's n-th use of a campaign exists once (UNIQUE campaign, account, nth).
A code that cannot be used never blocks the purchase: the outcome says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.codes import draw
from connector.codes.models import PromoAttachment, PromoCampaign, PromoCode, PromoRedemption
from connector.config import Promo
from connector.i18n import Translator
from connector.ledger.models import Entry
from connector.money import from_minor, to_minor
from connector.program import Earning, Program

ZERO = Decimal("0.00")
# Why a code was not used; the API answers the reason as `promo.outcome`.
# settled: given for a purchase already accrued (a robot or action too late).
REASONS = ("unknown", "not_yet_valid", "expired", "used_up", "budget_exhausted",
           "already_used", "settled")


@dataclass(frozen=True)
class Outcome:
    """What came of a code: "applied" (used now, or by this purchase before), "valid"
    (a check: it would apply) or one of REASONS."""

    code: str
    outcome: str
    campaign: str | None = None
    points: Decimal = ZERO
    detail: str = ""

    @property
    def refused(self) -> bool:
        return self.outcome in REASONS

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "outcome": self.outcome, "campaign": self.campaign,
                "points": str(self.points), "detail": self.detail}

    def message(self, t: Translator | None = None) -> str:
        """What a manager reads in the CRM, in `t`'s language (English without one); a
        refusal's detail stays in the check's own (English) words."""
        if t is None:
            if self.refused:
                return f"promo code {self.code}: {self.detail}"
            return f"promo code {self.code}: {self.points} points ({self.campaign})"
        if self.refused:
            return t._("promo code %(code)s: %(reason)s", code=self.code, reason=self.detail)
        return t._("promo code %(code)s: %(points)s (%(campaign)s)", code=self.code,
                   points=t.ledger_points(self.points), campaign=self.campaign)


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def campaign(program: Program, name: str) -> Promo | None:
    return next((promo for promo in program.settings.promo if promo.name == name), None)


def _find(session: Session, program: Program, code: str) -> tuple[Promo, PromoCode | None]:
    row = session.scalar(select(PromoCode).where(PromoCode.code == code))
    if row is not None:
        promo = campaign(program, row.campaign)
        if promo is not None and (not row.shared or promo.code == code):
            return promo, row
    else:
        for promo in program.settings.promo:
            if promo.code == code:
                return promo, None
    raise _Refused("unknown", "no promo campaign has this code")


def _window(program: Program, promo: Promo, at: datetime) -> None:
    local = at.astimezone(program.zone).replace(tzinfo=None)
    if promo.starts is not None and local < promo.starts:
        raise _Refused("not_yet_valid", f"valid from {promo.starts:%Y-%m-%d %H:%M}")
    if promo.ends is not None and local >= promo.ends:
        raise _Refused("expired", f"expired {promo.ends:%Y-%m-%d %H:%M}")


def points_of(program: Program, promo: Promo, amount: Decimal, earning: Earning) -> Decimal:
    """What one use grants on this purchase."""
    if promo.points is not None:
        return from_minor(to_minor(promo.points))
    if promo.bonus is not None:
        return from_minor(to_minor(program.bonus_points(promo.bonus)))
    assert promo.multiplier is not None
    # The purchase's cashback (campaign multiplier included, fixed extras not) once more
    # for each step of the code's multiplier above 1.
    return program.points_for(amount, earning.rate, earning.multiplier * (promo.multiplier - 1))


def _code_limit(promo: Promo, row: PromoCode | None) -> int:
    return promo.shared_code_uses if row is None or row.shared else promo.uses_per_code


def _uses_by(session: Session, promo: Promo, account_id: int | None) -> int:
    if account_id is None:
        return 0
    return session.scalar(select(func.count()).select_from(PromoRedemption).where(
        PromoRedemption.campaign == promo.name,
        PromoRedemption.account_id == account_id)) or 0


def _limits(session: Session, promo: Promo, row: PromoCode | None, points: Decimal,
            account_id: int | None) -> int:
    """Refuses by the counts as read now; returns the customer's uses so far."""
    used = _uses_by(session, promo, account_id)
    if promo.uses_per_customer and used >= promo.uses_per_customer:
        raise _Refused("already_used", f"this customer has already used campaign "
                                       f"{promo.name} {used} time(s), its limit")
    limit = _code_limit(promo, row)
    if limit and row is not None and row.uses >= limit:
        raise _Refused("used_up", f"the code has been used {row.uses} time(s), its limit")
    if promo.budget:
        granted = session.scalar(select(PromoCampaign.granted)
                                 .where(PromoCampaign.name == promo.name)) or 0
        if granted + to_minor(points) > to_minor(promo.budget):
            raise _Refused("budget_exhausted", f"campaign {promo.name} has "
                                               f"{from_minor(to_minor(promo.budget) - granted)} "
                                               f"of its {promo.budget} points left")
    return used


def check(session: Session, program: Program, raw: str, *, account_id: int | None,
          amount: Decimal, earning: Earning, at: datetime) -> Outcome:
    """What apply() would do, as far as a read can tell; writes nothing."""
    code = draw.normalize(raw)
    if code is None:
        return Outcome(str(raw).strip()[:draw.MAX_LENGTH], "unknown",
                       detail="not a promo code (3 to 32 letters and digits)")
    promo: Promo | None = None  # named in a refusal once known: which campaign refused
    try:
        promo, row = _find(session, program, code)
        _window(program, promo, at)
        points = points_of(program, promo, amount, earning)
        _limits(session, promo, row, points, account_id)
    except _Refused as refused:
        return Outcome(code, refused.reason, promo.name if promo else None,
                       detail=refused.detail)
    return Outcome(code, "valid", promo.name, points)


def apply(session: Session, program: Program, raw: str, *, account_id: int, source: str,
          amount: Decimal, earning: Earning, at: datetime, now: datetime
          ) -> tuple[Outcome, PromoRedemption | None]:
    """Use the code on this purchase. Returns the outcome and, when used now, its
    redemption (the caller sets its entry)."""
    code = draw.normalize(raw)
    if code is None:
        return Outcome(str(raw).strip()[:draw.MAX_LENGTH], "unknown",
                       detail="not a promo code (3 to 32 letters and digits)"), None
    promo: Promo | None = None  # named in a refusal once known: which campaign refused
    try:
        promo, row = _find(session, program, code)
        if row is not None:
            earlier = session.scalar(select(PromoRedemption).where(
                PromoRedemption.code_id == row.id, PromoRedemption.source == source))
            if earlier is not None:
                standing = session.scalar(select(func.coalesce(func.sum(
                    Entry.purchase_count), 0)).where(Entry.source == source)) or 0
                if standing > 0:
                    # A second accrual naming a purchase that still stands: no second grant.
                    raise _Refused("already_used", "this purchase has already used the code")
                # Accrued again after a reversal (a deal lost, then won): the same points,
                # no second use.
                return Outcome(code, "applied", promo.name, from_minor(earlier.points),
                               "used by this purchase before"), None
        _window(program, promo, at)
        points = points_of(program, promo, amount, earning)
        if row is None:
            row = _shared_row(session, promo, code, now)
        used = _limits(session, promo, row, points, account_id)
        _campaign_row(session, promo.name)
        redemption = _use(session, promo, row, points, account_id=account_id, nth=used + 1,
                          source=source, now=now)
    except _Refused as refused:
        return Outcome(code, refused.reason, promo.name if promo else None,
                       detail=refused.detail), None
    return Outcome(code, "applied", promo.name, points), redemption


def _use(session: Session, promo: Promo, row: PromoCode, points: Decimal, *,
         account_id: int, nth: int, source: str, now: datetime) -> PromoRedemption:
    minor = to_minor(points)
    try:
        with session.begin_nested():
            spend = update(PromoCampaign).where(PromoCampaign.name == promo.name).values(
                granted=PromoCampaign.granted + minor, uses=PromoCampaign.uses + 1)
            if promo.budget:
                spend = spend.where(PromoCampaign.granted + minor <= to_minor(promo.budget))
            if session.execute(spend.execution_options(synchronize_session=False)
                               ).rowcount != 1:
                raise _Refused("budget_exhausted",
                               f"campaign {promo.name} has spent its {promo.budget} points")
            take = update(PromoCode).where(PromoCode.id == row.id).values(
                uses=PromoCode.uses + 1)
            limit = _code_limit(promo, row)
            if limit:
                take = take.where(PromoCode.uses < limit)
            if session.execute(take.execution_options(synchronize_session=False)
                               ).rowcount != 1:
                raise _Refused("used_up", "the code has been used up")
            redemption = PromoRedemption(code_id=row.id, campaign=promo.name,
                                         account_id=account_id, nth=nth, source=source,
                                         points=minor, created_at=now)
            session.add(redemption)
            session.flush()
    except IntegrityError as exc:
        raise _Refused("already_used", "this customer has used the campaign's codes to "
                                       "its limit") from exc
    session.expire(row)
    return redemption


def _shared_row(session: Session, promo: Promo, code: str, now: datetime) -> PromoCode:
    """The shared code's row, made on its first use (its uses are counted there)."""
    _insert_once(session, PromoCode(campaign=promo.name, code=code, shared=True, uses=0,
                                    created_at=now))
    row = session.scalar(select(PromoCode).where(PromoCode.code == code))
    assert row is not None
    if row.campaign != promo.name:
        raise _Refused("unknown", "the code belongs to another campaign")
    return row


def _campaign_row(session: Session, name: str) -> None:
    if session.get(PromoCampaign, name) is None:
        _insert_once(session, PromoCampaign(name=name, granted=0, uses=0))


def _insert_once(session: Session, row: object) -> None:
    """Insert unless a concurrent transaction did (its row stands)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        pass


def upsert(session: Session) -> Any:
    """INSERT ... ON CONFLICT of the session's database (PostgreSQL or SQLite)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def attached(session: Session, source: str, now: datetime) -> str | None:
    """The code a robot or pipeline action gave for this purchase, if any; read by its
    accrual, which marks the purchase settled in the same statement (see PromoAttachment)."""
    table = PromoAttachment.__table__
    marked = upsert(session)(table).values(source=source, created_at=now, settled_at=now)
    return session.scalar(marked.on_conflict_do_update(
        index_elements=[table.c.source],
        set_={"settled_at": func.coalesce(table.c.settled_at, marked.excluded.settled_at)})
        .returning(table.c.code))
