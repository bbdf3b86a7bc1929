"""Returns: a purchase given back in part or in whole, in as many returns as it takes.

A return of R out of the S still standing of a purchase:
- takes back the points the purchase earned on R, at the purchase's own terms (the rate and
  campaign multiplier of its accrual): the points it still holds become what S - R would
  have earned. Fixed campaign extra points belong to the purchase as such: they stay while
  any part of it stands and go with the return that ends it. This is the rule settle applies
  when a CRM lowers a won deal's amount (Postings._reprice), so both ways agree. A purchase
  that earned by its product rows holds what its rows earned: a return naming rows takes
  what those rows earned at the purchase's rates (an excluded product's return takes
  nothing), one without rows its share R / S of what the purchase holds. A promo code's
  points stay with the purchase like fixed extra points.
- gives back the share R / S of the points that paid for the purchase (redemptions under the
  same source) and were not given back yet: the customer returned goods partly paid with
  points, so that part of the payment comes back like money would.
- lowers the purchase's spend by R (purchase_total, the rolling tier window at the
  purchase's own date); the purchase still counts as one until its last return.
The return that leaves nothing is a full reversal of what remains (Postings._reverse_in),
so rounding never leaves a point behind. Entries are kind 'reversal', details["return"]
names the return; a return larger than what is left is refused and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from connector.campaigns import placement
from connector.errors import InvalidAmountError, NothingToReverseError, ReturnTooLargeError
from connector.ledger.models import Account, Entry
from connector.ledger.postings import Postings, purchase_date
from connector.ledger.views import AccountRef, Result
from connector.money import from_minor, to_minor
from connector.products.rows import Row, as_json, rows_total

__all__ = ["Returns", "points_taken_back", "returned_before", "returned_of_standing"]


def _standing(entries: list[Entry]) -> list[Entry]:
    """The entries of the purchase as it stands: from its latest accrual that counted it."""
    starts = [i for i, e in enumerate(entries) if e.kind == "accrual" and e.purchase_count > 0]
    return entries[starts[-1]:] if starts else []


def _returned(entries: list[Entry]) -> int:
    return sum(to_minor(Decimal(e.details["return"]["amount"])) for e in entries
               if e.kind == "reversal" and e.details and "return" in e.details)


def returned_of_standing(entries: list[Entry]) -> int:
    """What returns took off the standing purchase (hundredths); 0 when none stands. A
    purchase accrued again (a deal lost, then won) carries the returns of the one before."""
    if sum(e.purchase_count for e in entries) <= 0:
        return 0
    standing = _standing(entries)
    return _returned(standing) + _carried(standing, "returns_carried")


def returned_before(entries: list[Entry]) -> tuple[int, int]:
    """For a purchase about to be accrued again: what returns took off the one before
    (hundredths of spend, hundredths of points), so the new accrual carries them."""
    standing = _standing(entries)
    return (_returned(standing) + _carried(standing, "returns_carried"),
            points_taken_back(standing, closed=True))


def _carried(standing: list[Entry], name: str) -> int:
    details = (standing[0].details or {}) if standing else {}
    return to_minor(Decimal(details.get(name, "0")))


def ended_by_return(entries: list[Entry]) -> bool:
    """Whether the source's purchase was last closed by a return in full."""
    closing = [e for e in entries if e.purchase_count < 0]
    return bool(closing) and sum(e.purchase_count for e in entries) <= 0 \
        and bool(closing[-1].details and "return" in closing[-1].details)


class Returns(Postings):
    def return_purchase(self, ref: AccountRef, source: str, amount: Decimal, *, key: str,
                        rows: Sequence[Row] = (), comment: str | None = None,
                        actor: str | None = None, source_data: dict[str, Any] | None = None,
                        fingerprint: str | None = None) -> Result:
        """Give back `amount` of the purchase `source` (see the module's rules)."""
        if amount <= 0:
            raise InvalidAmountError("return amount must be positive", amount=str(amount))
        if rows and rows_total(rows) != amount:
            raise InvalidAmountError(
                f"return amount {amount} differs from its rows' total {rows_total(rows)}",
                amount=str(amount), rows_total=str(rows_total(rows)))

        def operation(session: Session) -> Result:
            account = self._account(session, ref, create=False)
            entries = self._source_entries(session, account, source)
            remaining = sum(e.purchase_amount or 0 for e in entries)
            if sum(e.purchase_count for e in entries) <= 0 or remaining <= 0:
                raise NothingToReverseError(
                    f"{source!r} has no purchase left to return on {ref}: none is recorded, "
                    f"or it was already returned or reversed in full", source=source)
            wanted = to_minor(amount)
            if wanted > remaining:
                raise ReturnTooLargeError(
                    f"return of {amount} exceeds the {from_minor(remaining)} left of "
                    f"{source!r}", source=source, requested=str(amount),
                    remaining=str(from_minor(remaining)))
            details: dict[str, Any] = {"return": {
                "key": key, "amount": str(from_minor(wanted)),
                "rows": [as_json(row) for row in rows],
                "returned_before": str(from_minor(returned_of_standing(entries))),
                "remaining_after": str(from_minor(remaining - wanted))}}
            if wanted == remaining:
                entry = self._reverse_in(session, account, source, key=key, comment=comment,
                                         actor=actor, source_data=source_data,
                                         entries=entries, details=details)
            else:
                entry = self._return_part(session, account, entries, wanted, remaining,
                                          key=key, source=source, comment=comment,
                                          actor=actor, source_data=source_data,
                                          details=details)
            return Result.of(entry, duplicate=False)

        # The operation writes its entry under `key` or raises: the key's UNIQUE index is
        # the check, so a concurrent repeat that finds the purchase returned meanwhile
        # answers with the original rather than "nothing left to return".
        return self._run(key, "reversal", ref, operation, fingerprint, writes=True)

    def _earned_for(self, account: Account, entries: list[Entry], spend: int) -> int:
        """What the purchase earns on `spend` at its own accrual's terms (hundredths)."""
        accrual = next((e for e in reversed(entries)
                        if e.kind == "accrual" and e.details and "rate" in e.details), None)
        terms = (accrual.details if accrual is not None else None) or {}
        rate = Decimal(terms.get("rate", self.program.tier_named(account.tier).rate))
        points = self.program.points_for(from_minor(spend), rate,
                                         Decimal(terms.get("multiplier", "1")))
        return to_minor(points + Decimal(terms.get("extra_points", "0")))

    def _return_part(self, session: Session, account: Account, entries: list[Entry],
                     wanted: int, remaining: int, *, key: str, source: str,
                     comment: str | None, actor: str | None,
                     source_data: dict[str, Any] | None, details: dict[str, Any]) -> Entry:
        standing = _standing(entries)
        rated = _rated_rows(standing)
        if rated is None:
            earned_now = self._earned_for(account, entries, remaining)
            take = max(earned_now - self._earned_for(account, entries, remaining - wanted), 0)
            # What a campaign or A/B test gave shrinks with the purchase (its cost).
            terms, left = _terms(entries), from_minor(remaining - wanted)
            rate = Decimal(terms.get("rate", self.program.tier_named(account.tier).rate))
            if tests := placement.repriced(
                    self.program, terms.get("tests"), entries,
                    self.program.points_for(left, rate, Decimal(terms.get("multiplier", "1"))),
                    left, None):
                details["tests"] = tests
        else:
            # A purchase that earned by its rows holds what its rows earned less what returns
            # took since; a return takes what its own rows earned (by the purchase's rates),
            # or without rows its share of what the purchase holds.
            terms = _terms(entries)
            multiplier = Decimal(terms.get("multiplier", "1"))
            base = to_minor(self._rows_points(rated, multiplier)) - points_taken_back(entries)
            returned_rows = details["return"]["rows"]
            if returned_rows:
                rates = {r["product_id"]: Decimal(r["rate"]) for r in rated.details["rows"]}
                tier_rate = Decimal(terms.get("rate", self.program.tier_named(account.tier).rate))
                points = self._rows_points(None, multiplier, [
                    ((Decimal(r["price"]) * Decimal(r["quantity"])).quantize(Decimal("0.01")),
                     rates.get(r["product_id"], tier_rate)) for r in returned_rows])
                take = min(to_minor(points), max(base, 0))
            else:
                take = max(base, 0) * wanted // remaining
            earned_now = base + to_minor(Decimal(terms.get("extra_points", "0")))
            # What a campaign or A/B test gave the rows shrinks with them (its cost).
            if tests := placement.shrunk(terms.get("tests"), entries, take, base):
                details["tests"] = tests
        earned_now += to_minor(Decimal(_terms(entries).get("promo_points", "0")))
        # The source's entries are its earnings and the redemptions that paid for it; what
        # they net short of the earnings is redeemed points not given back yet.
        net = sum(e.amount - e.shortfall for e in entries)
        redeemed = -sum(e.amount for e in entries if e.kind == "redemption")
        unrefunded = min(max(earned_now - net, 0), redeemed)
        give = unrefunded * wanted // remaining  # the rest comes back with the last return
        details["return"].update(points_taken_back=str(from_minor(take)),
                                 redemption_given_back=str(from_minor(give)))
        account.purchase_total -= wanted
        return self._move(session, account, give - take, key=key, source=source,
                          entries=entries, comment=comment, actor=actor, details=details,
                          source_data=source_data, purchase_amount=-wanted,
                          purchase_at=purchase_date(entries))

    def _rows_points(self, rated: Entry | None, multiplier: Decimal,
                     pairs: list[tuple[Decimal, Decimal]] | None = None) -> Decimal:
        """Points of (amount, rate) pairs, or of the rows an entry stored, rounded once as
        Program.points_for_rows does."""
        if pairs is None:
            assert rated is not None
            pairs = [(Decimal(r["amount"]), Decimal(r["rate"])) for r in rated.details["rows"]]
        raw = sum((amount * rate for amount, rate in pairs), Decimal(0))
        return self.program.points_for(raw, Decimal(1), multiplier)


def _terms(entries: list[Entry]) -> dict[str, Any]:
    """The purchase's own terms: its accrual's (rate, multiplier, extra and promo points)."""
    accrual = next((e for e in reversed(entries)
                    if e.kind == "accrual" and e.details and "rate" in e.details), None)
    return (accrual.details if accrual is not None else None) or {}


def _rated_rows(standing: list[Entry]) -> Entry | None:
    """The entry that last rated the standing purchase's rows (its accrual or a re-pricing
    with rows); None when the purchase earns by its amount alone."""
    for entry in reversed(standing):
        details = entry.details or {}
        # A re-pricing that lowered the points is a reversal, and rates the rows too.
        if "rows_digest" in details and (entry.kind == "accrual" or "repriced_to" in details):
            return entry if details["rows_digest"] and details.get("rows") else None
    return None


def points_taken_back(entries: list[Entry], *, closed: bool = False) -> int:
    """What returns took back of the standing purchase's earned points (hundredths); a
    re-pricing by rows earns its rows less this, so returned rows stay returned."""
    if sum(e.purchase_count for e in entries) <= 0 and not closed:
        return 0
    standing = _standing(entries)
    return _carried(standing, "points_carried") + sum(
        to_minor(Decimal(e.details["return"].get("points_taken_back", "0")))
        for e in standing if e.kind == "reversal" and e.details and "return" in e.details)
