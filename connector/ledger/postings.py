"""How the ledger writes: entries, lots, locks and idempotency, under one transaction.

The public operations live in `engine.Ledger`; everything here runs inside the transaction
an operation opened, with the account row locked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from connector.campaigns import placement
from connector.codes import redeem as promo
from connector.db import Database, utcnow
from connector.errors import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InvalidAmountError,
    LedgerError,
)
from connector.ledger import lots, spend
from connector.ledger.models import Account, Entry
from connector.ledger.views import AccountRef, Result
from connector.money import from_minor, to_minor
from connector.products.rows import Row, digest
from connector.program import Program
from connector.referrals import caps
from connector.referrals.codes import new_card_number, new_code

Operation = Callable[[Session], Result]
# Draws of a random card number and referral code before giving up: with 9e8 numbers and
# 31^8 codes, even a million accounts make a collision rare, and several in a row unheard of.
NEW_ACCOUNT_ATTEMPTS = 5
# session.info: the (key, fingerprint) of the request an operation answers (see _run).
REQUEST = "ledger.request"
# The account by its contact key, built once: every operation starts with it.
BY_CONTACT = select(Account).where(Account.crm == bindparam("crm"),
                                   Account.portal == bindparam("portal"),
                                   Account.contact_id == bindparam("contact"))
BY_CONTACT_LOCKED = BY_CONTACT.with_for_update()
INSERT_ENTRY = insert(Entry.__table__)
# A source's entries: on any account (settle_purchase), on one account.
OF_SOURCE = select(Entry).where(Entry.source == bindparam("source")).order_by(Entry.id)
BY_SOURCE = OF_SOURCE.where(Entry.account_id == bindparam("account_id"))


def settled_to_nothing(entries: list[Entry]) -> bool:
    """True when a source's entries cancel out: no points, spend or purchase left to undo."""
    return (sum(e.amount - e.shortfall for e in entries) == 0
            and sum(e.purchase_amount or 0 for e in entries) == 0
            and sum(e.purchase_count for e in entries) == 0)


def rows_settled(entries: list[Entry]) -> str | None:
    """The digest of the rows a source was last settled with (None: by its amount alone)."""
    for entry in reversed(entries):
        details = entry.details or {}
        if "rows_digest" in details:
            return details["rows_digest"]
        if entry.kind == "accrual" and "repriced_to" not in details:
            return None
    return None


class Postings:
    def __init__(self, db: Database, program: Program,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.program = program
        self.clock = clock

    # -- accounts --------------------------------------------------------------------------
    def _find(self, session: Session, ref: AccountRef, *, lock: bool) -> Account | None:
        return session.scalar(BY_CONTACT_LOCKED if lock else BY_CONTACT,
                              {"crm": ref.crm, "portal": ref.portal, "contact": ref.contact_id})

    def _account(self, session: Session, ref: AccountRef, *, create: bool) -> Account:
        """The locked account row, created on first use when `create`."""
        account = self._find(session, ref, lock=True)
        if account is not None:
            return account
        if not create:
            raise AccountNotFoundError(f"no loyalty account for {ref}", ref=str(ref))
        now = self.clock()
        for _ in range(NEW_ACCOUNT_ATTEMPTS):
            account = Account(crm=ref.crm, portal=ref.portal, contact_id=ref.contact_id,
                              card_number=new_card_number(), referral_code=new_code(),
                              balance=0, overdraft=0, tier=self.program.settings.tiers[0].name,
                              purchase_count=0, purchase_total=0, version=1,
                              created_at=now, updated_at=now)
            spend.start(account, self.program.tier_window_start(now))
            try:
                with session.begin_nested():
                    session.add(account)
                    session.flush()
                return account
            except IntegrityError:
                # Another transaction created the contact's account between our read and
                # insert (PostgreSQL), or the card or code drawn is taken: draw again.
                existing = self._find(session, ref, lock=True)
                if existing is not None:
                    return existing
        raise LedgerError(f"no free card number or referral code drawn for {ref}; try again")

    # -- internals -------------------------------------------------------------------------
    def _run(self, key: str, kind: str, ref: AccountRef, operation: Operation,
             fingerprint: str | None = None, *, writes: bool = False) -> Result:
        """The operation once per key. `fingerprint` (a client's request, see
        ledger.fingerprint) is kept with the entry; a repeat under the key must match it.

        `writes`: the operation either writes its entry under `key` or raises. Then the
        entry's UNIQUE key is the idempotency check (a repeat fails the insert, or a check
        the original's writes now fail, and finds the original afterwards) and no SELECT
        comes first. Otherwise the key is looked up first: an operation that may write
        nothing (a bonus already granted) must still answer a repeat with the original.
        """
        if not key or len(key) > 255:
            raise InvalidAmountError("an idempotency key of 1 to 255 characters is required")
        try:
            with self.db.transaction() as session:
                if not writes:
                    existing = session.scalar(select(Entry).where(Entry.idempotency_key == key))
                    if existing is not None:
                        return self._replay(session, existing, kind, ref, fingerprint)
                session.info[REQUEST] = (key, fingerprint)
                return operation(session)
        except IntegrityError:
            # A repeat, or a concurrent request with the same key that committed first:
            # the original outcome stands.
            return self._replay_key(key, kind, ref, fingerprint)
        except LedgerError as refused:
            if not writes:
                raise
            # Refused now (e.g. the points are spent) but perhaps because the original under
            # this key was done: a repeat answers with it, anything else with the refusal.
            return self._replay_key(key, kind, ref, fingerprint, refused)

    def _replay_key(self, key: str, kind: str, ref: AccountRef, fingerprint: str | None,
                    refused: LedgerError | None = None) -> Result:
        """The original outcome under `key`; without one, the refusal (or the integrity
        error being handled: another constraint failed) goes to the caller."""
        with self.db.transaction(write=False) as session:
            existing = session.scalar(select(Entry).where(Entry.idempotency_key == key))
            if existing is None:
                if refused is not None:
                    raise refused
                raise  # the IntegrityError being handled by the caller
            return self._replay(session, existing, kind, ref, fingerprint)

    def _replay(self, session: Session, entry: Entry, kind: str, ref: AccountRef,
                fingerprint: str | None) -> Result:
        account = session.get(Account, entry.account_id)
        assert account is not None
        if entry.kind != kind or AccountRef(account.crm, account.portal,
                                            account.contact_id) != ref:
            raise IdempotencyConflictError(
                f"key {entry.idempotency_key!r} was already used for a {entry.kind} "
                f"on another request", key=entry.idempotency_key)
        # Entries from before fingerprints (NULL) cannot be compared; they replay as before.
        if fingerprint is not None and entry.request_hash is not None \
                and entry.request_hash != fingerprint:
            raise IdempotencyConflictError(
                f"key {entry.idempotency_key!r} was already used by an earlier {entry.kind} "
                f"request with other parameters; send a new key for a new request",
                key=entry.idempotency_key)
        return Result.of(entry, duplicate=True)

    def _post(self, session: Session, account: Account, kind: str, amount: int, *, key: str,
              source: str | None, occurred_at: datetime, comment: str | None = None,
              actor: str | None = None, details: dict[str, Any] | None = None,
              source_data: dict[str, Any] | None = None, purchase_amount: int | None = None,
              purchase_count: int = 0, shortfall: int = 0,
              purchase_at: datetime | None = None) -> Entry:
        """Write an entry and change the account by it (the row is written at commit).

        The entry goes in with a Core INSERT rather than the unit of work (a flush per entry
        was most of an accrual's time); the Entry returned is attached to the session as if
        loaded, so later changes to it (details) are written at commit."""
        account.balance += amount
        self._touch(account)
        purchase_at = purchase_at if purchase_amount else None
        if purchase_amount and purchase_at is not None:
            spend.record(account, purchase_amount, purchase_at)
        request = session.info.get(REQUEST)
        values = dict(account_id=account.id, kind=kind, amount=amount, idempotency_key=key,
                      source=source, purchase_amount=purchase_amount,
                      purchase_count=purchase_count, purchase_at=purchase_at,
                      shortfall=shortfall, balance_after=account.balance, comment=comment,
                      actor=actor, details=details, source_data=source_data,
                      request_hash=request[1] if request and request[0] == key else None,
                      occurred_at=occurred_at, created_at=self.clock())
        inserted = session.connection().execute(INSERT_ENTRY, values)
        entry = Entry(id=inserted.inserted_primary_key[0], **values)
        make_transient_to_detached(entry)
        session.add(entry)
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

    def _pay_referral(self, session: Session, account: Account, entry: Entry,
                      at: datetime) -> None:
        """Once per referred customer, keyed by the newcomer's account. The referrer's
        reward counts against the monthly cap (the link stands either way); the newcomer's
        bonus does not. What happened goes into the purchase entry's details."""
        referrer = session.get(Account, account.referred_by_id, with_for_update=True)
        outcome: dict[str, Any] = {"referrer_id": account.referred_by_id, "rewarded": False}
        pairs = [(account, "referral_newcomer", f"referral_newcomer:{account.id}")]
        if referrer is not None and caps.allows(session, self.program, referrer.id, at):
            pairs.append((referrer, "referral", f"referral:{account.id}"))
        elif referrer is not None:
            outcome["capped"] = True
            caps.record_capped(session, account, referrer, self.program, now=self.clock())
        for target, name, key in pairs:
            points = self.program.bonus_points(name)
            already = session.scalar(select(Entry.id).where(Entry.idempotency_key == key))
            if points > 0 and already is None:
                self._grant(session, target, name, points, key=key, actor="system", at=at,
                            comment=f"referral of account {account.id}")
                outcome["rewarded"] = outcome["rewarded"] or target is referrer
        entry.details = {**(entry.details or {}), "referral": outcome}

    def _upgrade_tier(self, session: Session, account: Account, *, extra_spend: Decimal,
                      now: datetime) -> str | None:
        """Upgrades happen at once; downgrades only in the scheduled recalculation."""
        window = spend.in_window(session, account, self.program.tier_window_start(now))
        best = self.program.tier_for(from_minor(window) + extra_spend)
        if self.program.tier_rank(best.name) > self.program.tier_rank(account.tier):
            account.tier = best.name
            account.tier_changed_at = now
            return best.name
        return None

    def _source_entries(self, session: Session, account: Account, source: str) -> list[Entry]:
        return list(session.scalars(BY_SOURCE, {"account_id": account.id, "source": source}))

    def _accrue_in(self, session: Session, account: Account, amount: Decimal, *, key: str,
                   source: str, category: str | None, at: datetime, comment: str | None,
                   actor: str | None, source_data: dict[str, Any] | None,
                   rows: Sequence[Row] | None = None,
                   promo_code: str | None = None,
                   carried: tuple[int, int] = (0, 0)) -> Entry:
        """A completed purchase: points by the account's current tier, campaigns, product
        rules (with `rows`), referral, and a promo code's points (its own or one attached to
        the purchase before)."""
        now = self.clock()
        first_purchase = account.first_purchase_at is None
        earning = self.program.earn(amount, tier=self.program.tier_named(account.tier), at=at,
                                    category=category, rows=rows, account_id=account.id)
        details: dict[str, Any] = {**earning.breakdown, "category": category}
        for test in earning.tests:
            placement.place(session, test.name, test.kind, account.id, test.group, at=at)
        # `carried`: the spend and the rows' points (hundredths) that returns took off this
        # purchase before it was lost; `amount` is already net of that spend.
        earned = max(earning.points - from_minor(carried[1]), Decimal(0))
        if carried[0]:
            details.update(returns_carried=str(from_minor(carried[0])),
                           points_carried=str(from_minor(carried[1])))
        code = promo_code if promo_code and promo_code.strip() else None
        if self.program.settings.promo:
            # Read, and the purchase marked settled, even when the deal names its own code,
            # so that an attach racing this accrual finds it settled. Without campaigns no
            # attach can succeed, and the lookup is a round trip every purchase would pay for.
            attached = promo.attached(session, source, now)
            code = code or attached
        code_points, redemption = Decimal("0.00"), None
        if code:
            used, redemption = promo.apply(session, self.program, code, account_id=account.id,
                                           source=source, amount=amount, earning=earning,
                                           at=at, now=now)
            details["promo"] = used.as_json()
            if not used.refused:
                # Part of the accrual: a return takes it back with the purchase, a re-price
                # keeps it as it was granted (promo_points).
                code_points = used.points
                details["promo_points"] = str(code_points)
        # The tier query runs before the account changes, so the row is written once.
        counted = amount if at >= self.program.tier_window_start(now) else Decimal(0)
        tier_up = self._upgrade_tier(session, account, extra_spend=counted, now=now)
        if tier_up:
            details["tier_up"] = tier_up
        account.purchase_count += 1
        account.purchase_total += to_minor(amount)
        account.first_purchase_at = min(filter(None, [account.first_purchase_at, at]))
        account.last_purchase_at = max(filter(None, [account.last_purchase_at, at]))
        entry = self._post(session, account, "accrual", to_minor(earned + code_points),
                           key=key, source=source, occurred_at=at, comment=comment,
                           actor=actor, details=details, source_data=source_data,
                           purchase_amount=to_minor(amount), purchase_count=1, purchase_at=at)
        self._credit(session, account, entry, earned + code_points, pending=True)
        if redemption is not None:
            redemption.entry_id = entry.id
        if first_purchase and account.referred_by_id:
            self._pay_referral(session, account, entry, at)
        return entry

    def _reverse_in(self, session: Session, account: Account, source: str, *, key: str,
                    comment: str | None, actor: str | None,
                    source_data: dict[str, Any] | None = None,
                    entries: list[Entry] | None = None,
                    details: dict[str, Any] | None = None) -> Entry:
        """Undo everything `source` earned or spent here (`entries`: its entries, when the
        caller already read them; `details`: more to say, e.g. the return it completes)."""
        if entries is None:
            entries = self._source_entries(session, account, source)
        net = sum(e.amount for e in entries) - sum(e.shortfall for e in entries)
        net_spend = sum(e.purchase_amount or 0 for e in entries)
        net_count = sum(e.purchase_count for e in entries)
        account.purchase_count -= net_count
        account.purchase_total -= net_spend
        reversed_: dict[str, Any] = {"reversed": str(from_minor(net)), **(details or {})}
        if tests := placement.undone(entries):
            reversed_["tests"] = tests
        return self._move(session, account, -net, key=key, source=source, entries=entries,
                          comment=comment, actor=actor, source_data=source_data,
                          purchase_amount=-net_spend or None, purchase_count=-net_count,
                          purchase_at=purchase_date(entries), details=reversed_)

    def _move(self, session: Session, account: Account, delta: int, *, key: str, source: str,
              entries: list[Entry], comment: str | None, actor: str | None,
              details: dict[str, Any], source_data: dict[str, Any] | None = None,
              purchase_amount: int | None = None, purchase_count: int = 0,
              purchase_at: datetime | None = None) -> Entry:
        """A reversal-kind entry changing the account by `delta` for `source`.

        Taking points back follows the program's negative_balance policy: "clamp" stops at
        zero and records the shortfall; "allow" takes it all, beyond the lots as overdraft.
        The source's own lots go first. Giving points back restores the dates of the lots the
        source had spent.
        """
        take, shortfall = 0, 0
        if delta < 0:
            wanted = -delta
            if self.program.settings.negative_balance == "clamp":
                take = max(0, min(wanted, account.balance))
                shortfall = wanted - take
            else:
                take = wanted
        entry = self._post(session, account, "reversal", -take if delta < 0 else delta,
                           key=key, source=source, occurred_at=self.clock(), comment=comment,
                           actor=actor, details=details, source_data=source_data,
                           purchase_amount=purchase_amount, purchase_count=purchase_count,
                           shortfall=shortfall, purchase_at=purchase_at)
        if take:
            own = {e.id for e in entries if e.amount > 0}
            taken = lots.debit(session, account, entry, take, prefer=own)
            account.overdraft += take - taken
        elif delta > 0:
            self._refund(session, account, entry, delta,
                         spent_by=[e.id for e in entries if e.amount < 0])
        return entry

    def _reprice(self, session: Session, account: Account, entries: list[Entry],
                 amount: Decimal, *, key: str, source: str, comment: str | None,
                 actor: str | None, source_data: dict[str, Any] | None,
                 rows: Sequence[Row] | None = None, taken_back: int = 0) -> Entry:
        """The purchase's amount or rows changed: earn or give back the difference, at the
        rate and multiplier the purchase was first accrued with (rows by today's rules).
        `rows` are the sale's; `taken_back` is what returns took of them (hundredths)."""
        # The accrual that recorded the purchase, not an earlier re-pricing: its terms, its
        # date (the spend stays at the purchase's date for the tier window).
        accrual = next((e for e in reversed(entries)
                        if e.kind == "accrual" and "repriced_to" not in (e.details or {})),
                       next(e for e in reversed(entries) if e.kind == "accrual"))
        terms = accrual.details or {}
        rate = Decimal(terms.get("rate", self.program.tier_named(account.tier).rate))
        multiplier = Decimal(terms.get("multiplier", "1"))
        points = self.program.points_for_rows(rows, rate, multiplier) if rows \
            else self.program.points_for(amount, rate, multiplier)
        code_points = Decimal(terms.get("promo_points", "0"))
        target = to_minor(points + Decimal(terms.get("extra_points", "0")) + code_points) \
            - taken_back
        delta = target - (sum(e.amount for e in entries) - sum(e.shortfall for e in entries))
        spend_delta = to_minor(amount) - sum(e.purchase_amount or 0 for e in entries)
        account.purchase_total += spend_delta
        details: dict[str, Any] = {"repriced_to": str(amount),
                                   "points_to": str(from_minor(target)),
                                   "rows_digest": digest(rows) if rows else None}
        if rows:
            details["rows"] = [r.as_json() for r in self.program.row_rates(rows, rate)]
        if code_points:
            details["promo_points"] = str(code_points)
        if tests := placement.repriced(self.program, terms.get("tests"), entries, points,
                                       amount, rows):
            details["tests"] = tests
        if delta < 0:
            return self._move(session, account, delta, key=key, source=source,
                              entries=entries, comment=comment, actor=actor, details=details,
                              source_data=source_data, purchase_amount=spend_delta,
                              purchase_at=accrual.occurred_at)
        if spend_delta > 0:
            counted = accrual.occurred_at >= self.program.tier_window_start(self.clock())
            tier_up = self._upgrade_tier(session, account, now=self.clock(),
                                         extra_spend=from_minor(spend_delta * counted))
            if tier_up:
                details["tier_up"] = tier_up
        entry = self._post(session, account, "accrual", delta, key=key, source=source,
                           occurred_at=self.clock(), comment=comment, actor=actor,
                           details=details, source_data=source_data,
                           purchase_amount=spend_delta, purchase_at=accrual.occurred_at)
        if delta:
            self._credit(session, account, entry, from_minor(delta), pending=True)
        return entry


def purchase_date(entries: list[Entry]) -> datetime | None:
    """The date of the source's current purchase: its latest accrual."""
    dated = [e.purchase_at for e in entries if e.kind == "accrual" and e.purchase_at]
    return max(dated) if dated else None
