"""The ledger's operations: accrue, redeem, reverse, adjust, grant a bonus, expire.

Every operation runs in one transaction that holds the account's lock (a row lock on
PostgreSQL, the single write lock on SQLite), writes append-only entries under a UNIQUE
idempotency key and updates the balance on the account row. Repeating a key returns the
original outcome and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.db import Database, utcnow
from connector.errors import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InsufficientPointsError,
    InvalidAmountError,
    LedgerError,
    RedemptionCapError,
)
from connector.ledger import lots, queries
from connector.ledger.models import Account, Entry, Lot
from connector.ledger.views import AccountRef, AccountView, EntryView, Result
from connector.money import from_minor, to_minor
from connector.program import Preview, Program

Operation = Callable[[Session], Result]


def card_number(account_id: int) -> str:
    """A 10-digit card number: the account id, zero-padded, plus a Luhn check digit."""
    body = f"{account_id:09d}"
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str((10 - total % 10) % 10)


class Ledger:
    def __init__(self, db: Database, program: Program,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.program = program
        self.clock = clock

    # -- accounts --------------------------------------------------------------------------
    def _find(self, session: Session, ref: AccountRef, *, lock: bool) -> Account | None:
        query = select(Account).where(Account.crm == ref.crm, Account.portal == ref.portal,
                                      Account.contact_id == ref.contact_id)
        if lock:
            query = query.with_for_update()
        return session.scalar(query)

    def _account(self, session: Session, ref: AccountRef, *, create: bool) -> Account:
        """The locked account row, created on first use when `create`."""
        account = self._find(session, ref, lock=True)
        if account is not None:
            return account
        if not create:
            raise AccountNotFoundError(f"no loyalty account for {ref}", ref=str(ref))
        now = self.clock()
        account = Account(crm=ref.crm, portal=ref.portal, contact_id=ref.contact_id,
                          balance=0, overdraft=0, tier=self.program.settings.tiers[0].name,
                          purchase_count=0, purchase_total=0, version=1,
                          created_at=now, updated_at=now)
        try:
            with session.begin_nested():
                session.add(account)
                session.flush()
                account.card_number = card_number(account.id)
        except IntegrityError:
            # Another transaction created it between our read and insert (PostgreSQL).
            account = self._find(session, ref, lock=True)
            if account is None:
                raise
        return account

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

    def link_referral(self, ref: AccountRef, referrer: AccountRef) -> None:
        """Record who brought this customer; the referral bonus follows their first purchase."""
        if ref == referrer:
            raise LedgerError("a customer cannot refer themselves")
        with self.db.transaction() as session:
            upline = self._account(session, referrer, create=True)
            account = self._account(session, ref, create=True)
            if account.purchase_count or account.first_purchase_at:
                raise LedgerError(f"{ref} has already made a purchase; referral not linked")
            cursor: Account | None = upline
            while cursor is not None:  # refuse cycles, which could also deadlock row locks
                if cursor.id == account.id:
                    raise LedgerError(f"{referrer} is already referred by {ref}")
                cursor = session.get(Account, cursor.referred_by_id) if cursor.referred_by_id \
                    else None
            account.referred_by_id = upline.id

    # -- the operations --------------------------------------------------------------------
    def accrue(self, ref: AccountRef, purchase_amount: Decimal, *, key: str,
               source: str | None = None, category: str | None = None,
               occurred_at: datetime | None = None, comment: str | None = None,
               actor: str | None = None, source_data: dict[str, Any] | None = None) -> Result:
        """Record a completed purchase and earn points by the program."""
        if purchase_amount <= 0:
            raise InvalidAmountError("purchase amount must be positive",
                                     amount=str(purchase_amount))

        def operation(session: Session) -> Result:
            now = self.clock()
            at = occurred_at or now
            account = self._account(session, ref, create=True)
            first_purchase = account.first_purchase_at is None
            earning = self.program.earn(purchase_amount, tier=self.program.tier_named(
                account.tier), at=at, category=category)
            details: dict[str, Any] = {**earning.breakdown, "category": category}
            account.purchase_count += 1
            account.purchase_total += to_minor(purchase_amount)
            account.first_purchase_at = min(filter(None, [account.first_purchase_at, at]))
            account.last_purchase_at = max(filter(None, [account.last_purchase_at, at]))
            counted = purchase_amount if at >= self.program.tier_window_start(now) else 0
            tier_up = self._upgrade_tier(session, account, extra_spend=Decimal(counted), now=now)
            if tier_up:
                details["tier_up"] = tier_up
            entry = self._post(session, account, "accrual", to_minor(earning.points), key=key,
                               source=source or key, occurred_at=at, comment=comment,
                               actor=actor, details=details, source_data=source_data,
                               purchase_amount=to_minor(purchase_amount), purchase_count=1)
            self._credit(session, account, entry, earning.points, pending=True)
            if first_purchase and account.referred_by_id:
                self._pay_referral(session, account, at)
            return Result.of(entry, duplicate=False)

        return self._run(key, "accrual", ref, operation)

    def redeem(self, ref: AccountRef, points: Decimal, *, key: str,
               purchase_amount: Decimal | None = None, source: str | None = None,
               partial: bool = False, comment: str | None = None, actor: str | None = None,
               source_data: dict[str, Any] | None = None) -> Result:
        """Pay with points. Never exceeds the spendable balance nor the program's share of
        `purchase_amount`; with `partial`, redeems as much of the request as allowed."""
        if points <= 0:
            raise InvalidAmountError("points to redeem must be positive", points=str(points))

        def operation(session: Session) -> Result:
            now = self.clock()
            account = self._account(session, ref, create=False)
            available = from_minor(lots.spendable(session, account, now))
            if purchase_amount is None:
                cap = None
                allowed = available if available >= self.program.settings.min_balance_to_redeem \
                    else Decimal(0)
                allowed = max(allowed, Decimal(0))
            else:
                cap = self.program.redeem_cap(purchase_amount)
                allowed = self.program.max_redeemable(purchase_amount, available)
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
            lots.debit(session, account, entry, to_minor(granted), spendable_at=now)
            return Result.of(entry, duplicate=False)

        return self._run(key, "redemption", ref, operation)

    def reverse(self, ref: AccountRef, source: str, *, key: str, comment: str | None = None,
                actor: str | None = None) -> Result:
        """Undo everything `source` earned or spent on this account (a return, a lost deal)."""

        def operation(session: Session) -> Result:
            now = self.clock()
            account = self._account(session, ref, create=False)
            entries = list(session.scalars(select(Entry).where(
                Entry.account_id == account.id, Entry.source == source)))
            net = sum(e.amount for e in entries) - sum(e.shortfall for e in entries)
            net_spend = sum(e.purchase_amount or 0 for e in entries)
            net_count = sum(e.purchase_count for e in entries)
            # Nothing left to undo still records a zero entry: the key then keeps its
            # outcome, and a late accrual for the source is not silently reversed by a replay.
            take, shortfall = 0, 0
            if net > 0:
                if self.program.settings.negative_balance == "clamp":
                    take = max(0, min(net, account.balance))
                    shortfall = net - take
                else:
                    take = net
            account.purchase_count -= net_count
            account.purchase_total -= net_spend
            entry = self._post(session, account, "reversal", -take if net > 0 else -net,
                               key=key, source=source, occurred_at=now, comment=comment,
                               actor=actor, details={"reversed": str(from_minor(net))},
                               purchase_amount=-net_spend or None, purchase_count=-net_count,
                               shortfall=shortfall)
            if net > 0:
                own = {e.id for e in entries if e.amount > 0}
                taken = lots.debit(session, account, entry, take, prefer=own)
                account.overdraft += take - taken
            elif net < 0:
                self._refund(session, account, entry, -net,
                             spent_by=[e.id for e in entries if e.amount < 0])
            return Result.of(entry, duplicate=False)

        return self._run(key, "reversal", ref, operation)

    def adjust(self, ref: AccountRef, points: Decimal, *, key: str, reason: str,
               actor: str | None = None) -> Result:
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

        return self._run(key, "adjustment", ref, operation)

    def grant_bonus(self, ref: AccountRef, name: str, *, key: str,
                    points: Decimal | None = None, comment: str | None = None,
                    actor: str | None = None, occurred_at: datetime | None = None,
                    source_data: dict[str, Any] | None = None) -> Result:
        """Grant a named bonus (welcome, birthday, review, ...) or, with `points`, any amount
        under that name. A bonus configured as 0 grants nothing and writes nothing."""
        amount = self.program.bonus_points(name) if points is None else points
        if points is not None and points <= 0:
            raise InvalidAmountError("bonus points must be positive", points=str(points))

        def operation(session: Session) -> Result:
            account = self._account(session, ref, create=True)
            if amount <= 0:
                return Result("bonus", account.id, None, Decimal("0.00"),
                              from_minor(account.balance),
                              details={"bonus": name, "skipped": "bonus is 0 in the program"})
            entry = self._grant(session, account, name, amount, key=key, comment=comment,
                                actor=actor, at=occurred_at or self.clock(),
                                source_data=source_data)
            return Result.of(entry, duplicate=False)

        return self._run(key, "bonus", ref, operation)

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
            account_ids = list(session.scalars(
                select(Lot.account_id).where(Lot.remaining > 0, Lot.expires_at <= as_of)
                .distinct().limit(limit)))
        return sum(len(self.expire_account(account_id, as_of=as_of))
                   for account_id in account_ids)

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
                category: str | None = None) -> Preview:
        """What a purchase would earn and could be paid with points; writes nothing."""
        if purchase_amount <= 0:
            raise InvalidAmountError("purchase amount must be positive")
        now = self.clock()
        tier, available = self.program.settings.tiers[0], Decimal(0)
        if ref is not None:
            with self.db.transaction(write=False) as session:
                account = self._find(session, ref, lock=False)
                if account is not None:
                    tier = self.program.tier_named(account.tier)
                    available = from_minor(lots.spendable(session, account, now))
        return self.program.preview(purchase_amount, tier=tier, available=available, at=now,
                                    category=category)

    def verify(self) -> tuple[int, list[queries.Mismatch]]:
        with self.db.transaction(write=False) as session:
            return queries.verify(session)

    # -- internals -------------------------------------------------------------------------
    def _run(self, key: str, kind: str, ref: AccountRef, operation: Operation) -> Result:
        if not key or len(key) > 255:
            raise InvalidAmountError("an idempotency key of 1 to 255 characters is required")
        try:
            with self.db.transaction() as session:
                existing = session.scalar(select(Entry).where(Entry.idempotency_key == key))
                if existing is not None:
                    return self._replay(session, existing, kind, ref)
                return operation(session)
        except IntegrityError:
            # A concurrent request with the same key committed first; its outcome stands.
            with self.db.transaction(write=False) as session:
                existing = session.scalar(select(Entry).where(Entry.idempotency_key == key))
                if existing is None:
                    raise
                return self._replay(session, existing, kind, ref)

    def _replay(self, session: Session, entry: Entry, kind: str, ref: AccountRef) -> Result:
        account = session.get(Account, entry.account_id)
        assert account is not None
        if entry.kind != kind or AccountRef(account.crm, account.portal,
                                            account.contact_id) != ref:
            raise IdempotencyConflictError(
                f"key {entry.idempotency_key!r} was already used for a {entry.kind} "
                f"on another request", key=entry.idempotency_key)
        return Result.of(entry, duplicate=True)

    def _post(self, session: Session, account: Account, kind: str, amount: int, *, key: str,
              source: str | None, occurred_at: datetime, comment: str | None = None,
              actor: str | None = None, details: dict[str, Any] | None = None,
              source_data: dict[str, Any] | None = None, purchase_amount: int | None = None,
              purchase_count: int = 0, shortfall: int = 0) -> Entry:
        account.balance += amount
        self._touch(account)
        entry = Entry(account_id=account.id, kind=kind, amount=amount, idempotency_key=key,
                      source=source, purchase_amount=purchase_amount,
                      purchase_count=purchase_count, shortfall=shortfall,
                      balance_after=account.balance, comment=comment, actor=actor,
                      details=details, source_data=source_data, occurred_at=occurred_at,
                      created_at=self.clock())
        session.add(entry)
        session.flush()
        return entry

    def _touch(self, account: Account) -> None:
        account.version += 1
        account.updated_at = self.clock()

    def _credit(self, session: Session, account: Account, entry: Entry, points: Decimal, *,
                pending: bool) -> None:
        now = self.clock()
        lots.credit(session, account, entry, to_minor(points), earned_at=now,
                    available_at=self.program.available_at(now) if pending else now,
                    expires_at=self.program.expires_at(now))

    def _refund(self, session: Session, account: Account, entry: Entry, points: int, *,
                spent_by: list[int]) -> None:
        """Give spent points back with the dates of the lots they came from."""
        left = points
        for lot, amount in lots.consumed_lots(session, spent_by):
            part = min(amount, left)
            if part <= 0:
                break
            lots.credit(session, account, entry, part, earned_at=lot.earned_at,
                        available_at=lot.available_at, expires_at=lot.expires_at)
            left -= part
        if left > 0:
            self._credit(session, account, entry, from_minor(left), pending=False)

    def _grant(self, session: Session, account: Account, name: str, points: Decimal, *,
               key: str, comment: str | None, actor: str | None, at: datetime,
               source_data: dict[str, Any] | None = None) -> Entry:
        entry = self._post(session, account, "bonus", to_minor(points), key=key, source=key,
                           occurred_at=at, comment=comment, actor=actor,
                           details={"bonus": name}, source_data=source_data)
        self._credit(session, account, entry, points, pending=False)
        return entry

    def _pay_referral(self, session: Session, account: Account, at: datetime) -> None:
        """Once per referred customer, keyed by the newcomer's account."""
        referrer = session.get(Account, account.referred_by_id, with_for_update=True)
        pairs = [(referrer, "referral", f"referral:{account.id}"),
                 (account, "referral_newcomer", f"referral_newcomer:{account.id}")]
        for target, name, key in pairs:
            points = self.program.bonus_points(name)
            already = session.scalar(select(Entry.id).where(Entry.idempotency_key == key))
            if target is not None and points > 0 and already is None:
                self._grant(session, target, name, points, key=key, actor="system", at=at,
                            comment=f"referral of account {account.id}")

    def _upgrade_tier(self, session: Session, account: Account, *, extra_spend: Decimal,
                      now: datetime) -> str | None:
        """Upgrades happen at once; downgrades only in the scheduled recalculation."""
        spend = queries.qualifying_spend(session, self.program, account.id, now) + extra_spend
        best = self.program.tier_for(spend)
        if self.program.tier_rank(best.name) > self.program.tier_rank(account.tier):
            account.tier = best.name
            account.tier_changed_at = now
            return best.name
        return None
