"""The ledger's operations: accrue, redeem, reverse, adjust, grant a bonus, expire.

Every operation runs in one transaction that holds the account's lock (a row lock on
PostgreSQL, the single write lock on SQLite), writes append-only entries under a UNIQUE
idempotency key and updates the balance on the account row. Repeating a key returns the
original outcome and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector.codes import redeem as promo
from connector.errors import (
    AccountNotFoundError,
    InsufficientPointsError,
    InvalidAmountError,
    LedgerError,
    NothingToReverseError,
    RedemptionCapError,
    ReferralRefusedError,
)
from connector.ledger import lots, queries
from connector.ledger.models import Account, Entry, Lot
from connector.ledger.postings import OF_SOURCE, rows_settled, settled_to_nothing
from connector.ledger.returns import (
    Returns,
    ended_by_return,
    points_taken_back,
    returned_before,
    returned_of_standing,
)
from connector.ledger.spend import in_window
from connector.ledger.views import AccountRef, AccountView, EntryView, Result
from connector.money import from_minor, to_minor
from connector.privacy.anonymous import is_erased, not_erased
from connector.products.rows import Row, digest
from connector.program import Preview
from connector.referrals.models import ReferralEvent

__all__ = ["Ledger", "TierChange"]


@dataclass(frozen=True)
class TierChange:
    account_id: int
    old: str
    new: str
    at: datetime


# Passes of settle_purchase's holders before it gives up: each one more means another
# worker moved the purchase to someone else meanwhile.
MOVE_ATTEMPTS = 5


class HeldElsewhere(Exception):
    """A purchase settled as one customer's alone has entries on another account."""


class Ledger(Returns):
    """The public operations; see Postings for how entries and lots are written, Returns
    for partial returns."""

    def key_used(self, key: str) -> bool:
        """Whether an entry already answers to this idempotency key (a repeat, or a conflict)."""
        with self.db.transaction(write=False) as session:
            return session.scalar(select(Entry.id).where(Entry.idempotency_key == key)) \
                is not None

    def account_id(self, ref: AccountRef) -> int | None:
        with self.db.transaction(write=False) as session:
            account = self._find(session, ref, lock=False)
            return account.id if account else None

    def open_account(self, ref: AccountRef, **attributes: Any) -> int:
        """Create the account if needed and set plain attributes (e.g. birthday)."""
        with self.db.transaction() as session:
            account = self._account(session, ref, create=True)
            changed = {k: v for k, v in attributes.items() if getattr(account, k) != v}
            for name, value in changed.items():
                setattr(account, name, value)
            if changed:
                self._touch(account)
            return account.id

    def link_referral(self, ref: AccountRef, referrer: AccountRef, *,
                      via: str | None = None) -> bool:
        """Record who brought this customer; the referral bonus follows their first
        purchase. True when linked now, False when it already was (to the same referrer).
        Refused (ReferralRefusedError, nothing written) for oneself, a cycle, a customer
        who already bought, or one already referred by someone else: a link is made once."""
        if ref == referrer:
            raise ReferralRefusedError("a customer cannot refer themselves", reason="self")
        with self.db.transaction() as session:
            # The newcomer's row first, then the referrer's: the order a first purchase
            # takes them in (_pay_referral), so the two cannot deadlock.
            account = self._account(session, ref, create=True)
            upline = self._account(session, referrer, create=True)
            if account.referred_by_id == upline.id:
                return False
            if account.referred_by_id is not None:
                raise ReferralRefusedError(f"{ref} is already referred by another customer",
                                           reason="taken")
            if account.purchase_count or account.first_purchase_at:
                raise ReferralRefusedError(
                    f"{ref} has already made a purchase; referral not linked",
                    reason="purchased")
            cursor: Account | None = upline
            while cursor is not None:  # refuse cycles, which could also deadlock row locks
                if cursor.id == account.id:
                    raise ReferralRefusedError(f"{referrer} is already referred by {ref}",
                                               reason="cycle")
                cursor = session.get(Account, cursor.referred_by_id) if cursor.referred_by_id \
                    else None
            account.referred_by_id = upline.id
            session.add(ReferralEvent(account_id=account.id, referrer_id=upline.id,
                                      code=upline.referral_code, outcome="linked", via=via,
                                      created_at=self.clock()))
            return True

    def referrer_by_code(self, code: str) -> AccountRef | None:
        """The customer whose referral code this is (`code` as stored: normalised)."""
        with self.db.transaction(write=False) as session:
            row = session.execute(select(Account.crm, Account.portal, Account.contact_id)
                                  .where(Account.referral_code == code)).one_or_none()
            return AccountRef(*row) if row else None

    # -- the operations --------------------------------------------------------------------
    def accrue(self, ref: AccountRef, purchase_amount: Decimal, *, key: str,
               source: str | None = None, category: str | None = None,
               occurred_at: datetime | None = None, comment: str | None = None,
               actor: str | None = None, source_data: dict[str, Any] | None = None,
               fingerprint: str | None = None, promo_code: str | None = None) -> Result:
        """Record a completed purchase and earn points by the program (and by a promo
        code: used once, under the key; what came of it is in the result's details)."""
        if purchase_amount <= 0:
            raise InvalidAmountError("purchase amount must be positive",
                                     amount=str(purchase_amount))

        def operation(session: Session) -> Result:
            account = self._account(session, ref, create=True)
            entry = self._accrue_in(session, account, purchase_amount, key=key,
                                    source=source or key, category=category,
                                    at=occurred_at or self.clock(), comment=comment,
                                    actor=actor, source_data=source_data,
                                    promo_code=promo_code)
            return Result.of(entry, duplicate=False)

        return self._run(key, "accrual", ref, operation, fingerprint, writes=True)

    def settle_purchase(self, ref: AccountRef | None, source: str, amount: Decimal | None, *,
                        category: str | None = None, occurred_at: datetime | None = None,
                        comment: str | None = None, actor: str | None = None,
                        source_data: dict[str, Any] | None = None,
                        rows: Sequence[Row] | None = None,
                        promo_code: str | None = None) -> list[Result]:
        """Bring the ledger in line with a purchase's current state in the CRM.

        `amount` None or not positive: the purchase does not count (lost, deleted, moved out
        of the program), so whatever it earned is taken back. Otherwise `ref` made a purchase
        of `amount`: accrued once, re-priced by the difference when the amount changed, moved
        when the customer changed. Repeating the same state writes nothing, so duplicate and
        out-of-order events are harmless as long as the state given is the current one.
        `rows` (the purchase's product rows, None or empty: none) earn by the product rules;
        a changed row list re-prices the purchase as a changed amount does.
        Returns recorded against the purchase (return_purchase) come off `amount`: the CRM's
        amount is the sale, and a purchase returned in full stays returned.
        `promo_code` (the deal's field) is used when the purchase is accrued, else a code
        attached to the source before.
        """
        counts = amount is not None and amount > 0 and ref is not None
        settle = partial(self._settle, source=source, comment=comment, actor=actor,
                         source_data=source_data)
        if counts:
            assert ref is not None and amount is not None
            # The common case, a deal new or held by this customer alone, in one
            # transaction: the deal's entries it reads under the lock tell that no one else
            # holds it. Otherwise that transaction is undone, and the others come first.
            with suppress(HeldElsewhere):
                result = settle(ref, amount=amount, category=category,
                                occurred_at=occurred_at, rows=rows or None,
                                promo_code=promo_code, alone=True)
                return [result] if result is not None else []
        results: list[Result | None] = []
        for attempt in range(MOVE_ATTEMPTS):
            with self.db.transaction(write=False) as session:
                holders = [AccountRef(*row) for row in session.execute(
                    select(Account.crm, Account.portal, Account.contact_id)
                    .join(Entry, Entry.account_id == Account.id)
                    # An erased customer's purchases are final: never moved or taken back.
                    .where(Entry.source == source, not_erased(Account.contact_id)).distinct())]
            results += [settle(holder, amount=None) for holder in holders
                        if not counts or holder != ref]
            if not counts:
                break
            assert ref is not None and amount is not None
            try:
                # The holders were read before their locks: another worker may have moved
                # the purchase to a third customer since. Under this account's lock, one
                # still holding it elsewhere is taken back first, and then this is settled.
                results.append(settle(ref, amount=amount, category=category,
                                      occurred_at=occurred_at, rows=rows or None,
                                      promo_code=promo_code, alone=None))
                break
            except HeldElsewhere:
                if attempt == MOVE_ATTEMPTS - 1:
                    raise
        return [result for result in results if result is not None]

    def _settle(self, ref: AccountRef, source: str, amount: Decimal | None, *,
                category: str | None = None, occurred_at: datetime | None = None,
                comment: str | None = None, actor: str | None = None,
                source_data: dict[str, Any] | None = None,
                rows: Sequence[Row] | None = None,
                promo_code: str | None = None, alone: bool | None = False) -> Result | None:
        """`alone`: raise HeldElsewhere, writing nothing, when another account holds
        entries of the source; None: when another account not erased holds a purchase
        of it that was not taken back."""
        with self.db.transaction() as session:
            account = self._account(session, ref, create=amount is not None)
            # The source's entries on any account, in one read (a handful): keys number
            # them, and under the account lock they cannot collide; this account's are what
            # is settled here.
            everywhere = list(session.scalars(OF_SOURCE, {"source": source}))
            entries = [e for e in everywhere if e.account_id == account.id]
            if alone and len(entries) < len(everywhere):
                raise HeldElsewhere(source)
            if alone is None and amount is not None \
                    and self._held_elsewhere(session, account, everywhere):
                raise HeldElsewhere(source)
            key = f"{source}:{len(everywhere)}"
            net_count = sum(e.purchase_count for e in entries)
            net_spend = sum(e.purchase_amount or 0 for e in entries)
            returned = returned_of_standing(entries)
            if amount is None:
                if settled_to_nothing(entries):
                    return None
                entry = self._reverse_in(session, account, source, key=key, comment=comment,
                                         actor=actor, source_data=source_data, entries=entries)
            elif net_count <= 0:
                if ended_by_return(entries):
                    return None
                # Won again after it was lost: what was returned of it stays returned.
                carried, carried_points = returned_before(entries)
                if carried >= to_minor(amount):
                    return None
                entry = self._accrue_in(session, account, amount - from_minor(carried),
                                        key=key, source=source,
                                        category=category, at=occurred_at or self.clock(),
                                        comment=comment, actor=actor, source_data=source_data,
                                        rows=rows, promo_code=promo_code,
                                        carried=(carried, carried_points if rows else 0))
            elif to_minor(amount) <= returned:
                entry = self._reverse_in(session, account, source, key=key, comment=comment,
                                         actor=actor, source_data=source_data, entries=entries)
            elif to_minor(amount) - returned != net_spend \
                    or rows_settled(entries) != (digest(rows) if rows else None):
                entry = self._reprice(session, account, entries,
                                      amount - from_minor(returned), key=key,
                                      source=source, comment=comment, actor=actor,
                                      source_data=source_data, rows=rows,
                                      taken_back=points_taken_back(entries) if rows else 0)
            else:
                return None
            return Result.of(entry, duplicate=False)

    def _held_elsewhere(self, session: Session, account: Account,
                        everywhere: list[Entry]) -> bool:
        """Whether an account other than `account`, not erased, holds what these entries
        of one source leave standing."""
        others: dict[int, list[Entry]] = {}
        for entry in everywhere:
            if entry.account_id != account.id:
                others.setdefault(entry.account_id, []).append(entry)
        standing = [i for i, entries in others.items() if not settled_to_nothing(entries)]
        if not standing:
            return False
        contacts = session.scalars(select(Account.contact_id).where(Account.id.in_(standing)))
        return any(not is_erased(contact) for contact in contacts)

    def redeem(self, ref: AccountRef, points: Decimal, *, key: str,
               purchase_amount: Decimal | None = None, source: str | None = None,
               partial: bool = False, comment: str | None = None, actor: str | None = None,
               source_data: dict[str, Any] | None = None,
               fingerprint: str | None = None, rows: Sequence[Row] | None = None) -> Result:
        """Pay with points. Never exceeds the spendable balance nor the program's share of
        `purchase_amount` (of its `rows` that earn points, with redeem_eligible_only); with
        `partial`, redeems as much of the request as allowed."""
        if points <= 0:
            raise InvalidAmountError("points to redeem must be positive", points=str(points))

        def operation(session: Session) -> Result:
            now = self.clock()
            account = self._account(session, ref, create=False)
            # One read of the spendable lots: their sum is what may be spent, and the
            # debit takes from them.
            spendable = lots.open_lots(session, account, spendable_at=now)
            available = from_minor(sum(lot.remaining for lot in spendable) - account.overdraft)
            if purchase_amount is None:
                cap = None
                allowed = available if available >= self.program.settings.min_balance_to_redeem \
                    else Decimal(0)
                allowed = max(allowed, Decimal(0))
            else:
                cap = self.program.redeem_cap(purchase_amount, rows)
                allowed = self.program.max_redeemable(purchase_amount, available, rows)
            granted = points
            if points > allowed:
                if partial and allowed > 0:
                    granted = allowed
                elif cap is not None and points > cap and cap <= available:
                    raise RedemptionCapError(
                        f"at most {cap} points may pay for a purchase of {purchase_amount}",
                        max_redeemable=str(allowed))
                else:
                    raise InsufficientPointsError(
                        f"{available} points are spendable, {points} requested",
                        available=str(available), max_redeemable=str(allowed))
            details = {"requested": str(points), "purchase_amount":
                       None if purchase_amount is None else str(purchase_amount)}
            entry = self._post(session, account, "redemption", -to_minor(granted), key=key,
                               source=source or key, occurred_at=now, comment=comment,
                               actor=actor, details=details, source_data=source_data)
            lots.debit(session, account, entry, to_minor(granted), lots=spendable)
            return Result.of(entry, duplicate=False)

        return self._run(key, "redemption", ref, operation, fingerprint, writes=True)

    def reverse(self, ref: AccountRef, source: str, *, key: str, comment: str | None = None,
                actor: str | None = None, fingerprint: str | None = None) -> Result:
        """Undo everything `source` earned or spent on this account (a return, a lost deal).
        A source with nothing on the account is refused and writes nothing, so a reversal
        that arrives before its purchase can be sent again under the same key."""

        def operation(session: Session) -> Result:
            account = self._account(session, ref, create=False)
            entries = self._source_entries(session, account, source)
            if settled_to_nothing(entries):
                raise NothingToReverseError(
                    f"{source!r} has nothing to reverse on {ref}: no purchase, redemption or "
                    f"credit of it is recorded there, or it was already reversed",
                    source=source)
            entry = self._reverse_in(session, account, source, key=key, comment=comment,
                                     actor=actor, entries=entries)
            return Result.of(entry, duplicate=False)

        return self._run(key, "reversal", ref, operation, fingerprint, writes=True)

    def adjust(self, ref: AccountRef, points: Decimal, *, key: str, reason: str,
               actor: str | None = None, fingerprint: str | None = None) -> Result:
        """An admin correction, positive or negative, always with a reason."""
        if points == 0:
            raise InvalidAmountError("adjustment must not be zero")
        if not reason.strip():
            raise LedgerError("an adjustment needs a reason")

        def operation(session: Session) -> Result:
            now = self.clock()
            account = self._account(session, ref, create=True)
            minor = to_minor(points)
            if minor < 0 and -minor > account.balance \
                    and self.program.settings.negative_balance == "clamp":
                raise InsufficientPointsError(
                    f"balance is {from_minor(account.balance)}, cannot remove {-points}",
                    available=str(from_minor(account.balance)))
            entry = self._post(session, account, "adjustment", minor, key=key, source=key,
                               occurred_at=now, comment=reason, actor=actor)
            if minor > 0:
                self._credit(session, account, entry, points, pending=False)
            else:
                taken = lots.debit(session, account, entry, -minor)
                account.overdraft += -minor - taken
            return Result.of(entry, duplicate=False)

        return self._run(key, "adjustment", ref, operation, fingerprint, writes=True)

    def grant_bonus(self, ref: AccountRef, name: str, *, key: str,
                    points: Decimal | None = None, comment: str | None = None,
                    actor: str | None = None, occurred_at: datetime | None = None,
                    source_data: dict[str, Any] | None = None,
                    fingerprint: str | None = None, once: bool = False) -> Result:
        """Grant a named bonus (welcome, birthday, review, ...) or, with `points`, any amount
        under that name. A bonus configured as 0 grants nothing and writes nothing; with
        `once`, neither does a bonus of that name the account already has (under any key)."""
        amount = self.program.bonus_points(name) if points is None else points
        if points is not None and points <= 0:
            raise InvalidAmountError("bonus points must be positive", points=str(points))

        def operation(session: Session) -> Result:
            account = self._account(session, ref, create=True)
            if amount <= 0:
                return Result("bonus", account.id, None, Decimal("0.00"),
                              from_minor(account.balance),
                              details={"bonus": name, "skipped": "bonus is 0 in the program"})
            if once and name in queries.bonus_names(session, account.id):
                # Looked up again under the account's lock: a concurrent repeat of this
                # request granted it meanwhile, and answers with that grant.
                granted = session.scalar(select(Entry).where(Entry.idempotency_key == key))
                if granted is not None:
                    return self._replay(session, granted, "bonus", ref, fingerprint)
                return Result("bonus", account.id, None, Decimal("0.00"),
                              from_minor(account.balance),
                              details={"bonus": name, "skipped": "already granted"})
            entry = self._grant(session, account, name, amount, key=key, comment=comment,
                                actor=actor, at=occurred_at or self.clock(),
                                source_data=source_data)
            return Result.of(entry, duplicate=False)

        return self._run(key, "bonus", ref, operation, fingerprint)

    def expire_account(self, account_id: int, *, as_of: datetime | None = None) -> list[Result]:
        """Expire this account's lots whose date has passed, oldest first."""
        as_of = as_of or self.clock()
        with self.db.transaction() as session:
            account = session.get(Account, account_id, with_for_update=True)
            if account is None:
                return []
            due = session.scalars(select(Lot).where(
                Lot.account_id == account_id, Lot.remaining > 0, Lot.expires_at <= as_of,
            ).order_by(Lot.expires_at, Lot.earned_at, Lot.id))
            results = []
            for lot in list(due):
                entry = self._post(session, account, "expiry", -lot.remaining,
                                   key=f"expiry:lot:{lot.id}", source=f"lot:{lot.id}",
                                   occurred_at=as_of, actor="system",
                                   details={"lot": lot.id,
                                            "expires_at": lot.expires_at.isoformat()})
                lots.debit_lot(session, entry, lot)
                results.append(Result.of(entry, duplicate=False))
            return results

    def expire_due(self, *, as_of: datetime | None = None, limit: int = 10_000) -> int:
        """Expire every account with lots past their date; returns the entries written."""
        as_of = as_of or self.clock()
        with self.db.transaction(write=False) as session:
            # Walk the lots by expiry date (ix_lots_expires_open), not every open lot.
            due = (select(Lot.account_id).where(Lot.expires_at <= as_of, Lot.remaining > 0)
                   .order_by(Lot.expires_at).limit(limit).subquery())
            account_ids = list(session.scalars(select(due.c.account_id).distinct()))
        return sum(len(self.expire_account(account_id, as_of=as_of))
                   for account_id in account_ids)

    def recalculate_tiers(self, *, now: datetime | None = None) -> list[TierChange]:
        """Move every account to the tier its rolling spend earns. Downgrades happen only
        here (upgrades already happened at the purchase), not within tier_grace_days of the
        account's last tier change."""
        now = now or self.clock()
        settings = self.program.settings
        grace_end = now - timedelta(days=settings.tier_grace_days)
        with self.db.transaction(write=False) as session:
            spend = dict(session.execute(
                select(Entry.account_id, func.sum(Entry.purchase_amount))
                .where(Entry.purchase_at >= self.program.tier_window_start(now))
                .group_by(Entry.account_id)).all())
            rows = list(session.execute(select(Account.id, Account.tier, Account.tier_changed_at)))
        changes = []
        for account_id, tier, changed_at in rows:
            best = self.program.tier_for(from_minor(int(spend.get(account_id) or 0))).name
            if best == tier:
                continue
            downgrade = self.program.tier_rank(best) < self.program.tier_rank(tier)
            if downgrade and changed_at is not None and changed_at > grace_end:
                continue
            with self.db.transaction() as session:
                account = session.get(Account, account_id, with_for_update=True)
                if account is None or account.tier != tier:
                    continue  # changed meanwhile; the next run looks again
                # The spend read above is from before the lock: a purchase committed since
                # may keep the tier without changing it. The locked account's own sum says.
                best = self.program.tier_for(from_minor(in_window(
                    session, account, self.program.tier_window_start(now)))).name
                if best == tier:
                    continue
                account.tier = best
                account.tier_changed_at = now
                self._touch(account)
            changes.append(TierChange(account_id, tier, best, now))
        return changes

    # -- reading ---------------------------------------------------------------------------
    def account(self, ref: AccountRef) -> AccountView:
        with self.db.transaction(write=False) as session:
            account = queries.find_account(session, ref)
            return queries.account_view(session, self.program, account, self.clock())

    def account_by_card(self, card: str) -> AccountView:
        """For a POS or web shop that knows the customer's card number."""
        with self.db.transaction(write=False) as session:
            account = session.scalar(select(Account).where(Account.card_number == card))
            if account is None:
                raise AccountNotFoundError(f"no loyalty account with card {card}", card=card)
            return queries.account_view(session, self.program, account, self.clock())

    def history(self, ref: AccountRef, *, limit: int = 50,
                before_id: int | None = None) -> list[EntryView]:
        with self.db.transaction(write=False) as session:
            account = queries.find_account(session, ref)
            return queries.history(session, account, limit=limit, before_id=before_id)

    def preview(self, purchase_amount: Decimal, ref: AccountRef | None = None, *,
                category: str | None = None, rows: Sequence[Row] | None = None) -> Preview:
        """What a purchase would earn and could be paid with points; writes nothing."""
        if purchase_amount <= 0:
            raise InvalidAmountError("purchase amount must be positive")
        now = self.clock()
        tier, available = self.program.settings.tiers[0], Decimal(0)
        account_id = None
        if ref is not None:
            with self.db.transaction(write=False) as session:
                account = self._find(session, ref, lock=False)
                if account is not None:
                    tier = self.program.tier_named(account.tier)
                    available = from_minor(lots.spendable(session, account, now))
                    account_id = account.id
        return self.program.preview(purchase_amount, tier=tier, available=available, at=now,
                                    category=category, rows=rows, account_id=account_id)

    def check_promo(self, raw: str, purchase_amount: Decimal, ref: AccountRef | None = None,
                    *, category: str | None = None) -> promo.Outcome:
        """What a promo code would give this purchase now, or why it would be refused;
        writes nothing."""
        if purchase_amount <= 0:
            raise InvalidAmountError("purchase amount must be positive")
        now = self.clock()
        with self.db.transaction(write=False) as session:
            account = self._find(session, ref, lock=False) if ref is not None else None
            tier = self.program.tier_named(account.tier if account else None)
            earning = self.program.earn(purchase_amount, tier=tier, at=now, category=category,
                                        account_id=account.id if account else None)
            return promo.check(session, self.program, raw,
                               account_id=account.id if account else None,
                               amount=purchase_amount, earning=earning, at=now)

    def verify(self) -> tuple[int, list[queries.Mismatch]]:
        with self.db.transaction(write=False) as session:
            return queries.verify(session)

