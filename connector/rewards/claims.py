"""Claiming a reward: points paid as a 'reward' entry (oldest lots first, like a redemption),
one unit of stock taken, a claim code issued, staff told through the CRM's trigger; all in
the one transaction that holds the account's lock, once per idempotency key.

Cancelling gives the points back with the dates of the lots they came from (as reversing a
redemption does) and the unit back to the stock; a claim handed over stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector import triggers
from connector.codes import alphabet
from connector.db import Database, utcnow
from connector.errors import LedgerError, RewardNotFoundError, RewardRefusedError
from connector.ledger import lots
from connector.ledger.models import Account, Entry
from connector.ledger.postings import Postings
from connector.ledger.views import AccountRef, Result
from connector.money import from_minor
from connector.program import Program
from connector.rewards import models
from connector.rewards.catalogue import Catalogue, RewardView, find, open_claims

CODE_ATTEMPTS = 5
# What a customer shows staff: 31^10 claim codes, so guessing one is hopeless.
CODE_LENGTH = 10


@dataclass(frozen=True)
class ClaimView:
    id: int
    code: str
    reward: str
    reward_name: str
    points: Decimal
    status: str
    ref: AccountRef
    via: str
    created_at: datetime
    handed_at: datetime | None
    cancelled_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "code": self.code, "reward": self.reward,
                "reward_name": self.reward_name, "points": str(self.points),
                "status": self.status,
                "account": {"crm": self.ref.crm, "portal": self.ref.portal,
                            "contact_id": self.ref.contact_id},
                "via": self.via, "created_at": self.created_at.isoformat(),
                "handed_at": self.handed_at.isoformat() if self.handed_at else None,
                "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None}


@dataclass(frozen=True)
class Claimed:
    """A claim and the ledger's outcome; `result.duplicate` when the key was seen before."""

    claim: ClaimView
    result: Result

    def as_json(self) -> dict[str, Any]:
        return {**self.result.as_json(), "claim": self.claim.as_json()}


def _claim_query() -> Any:
    return (select(models.RewardClaim, models.Reward.slug, models.Reward.name, Account.crm,
                   Account.portal, Account.contact_id)
            .join(models.Reward, models.Reward.id == models.RewardClaim.reward_id)
            .join(Account, Account.id == models.RewardClaim.account_id))


def _view(row: Any) -> ClaimView:
    claim, slug, name, crm, portal, contact = row
    return ClaimView(claim.id, claim.code, slug, name, from_minor(claim.cost), claim.status,
                     AccountRef(crm, portal, contact), claim.via, claim.created_at,
                     claim.handed_at, claim.cancelled_at)


class Claims(Postings):
    def __init__(self, db: Database, program: Program, catalogue: Catalogue,
                 clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(db, program, clock)
        self.catalogue = catalogue

    def claim(self, ref: AccountRef, slug: str, *, key: str, via: str,
              actor: str | None = None, fingerprint: str | None = None) -> Claimed:
        """Claim the reward for the customer, or RewardRefusedError saying why not."""
        self.catalogue.ensure_synced()

        def operation(session: Session) -> Result:
            now = self.clock()
            account = self._account(session, ref, create=False)
            reward = find(session, slug)
            self._check(session, account, reward, now)
            if reward.stock_left is not None:
                # Guarded: of two claims of the last unit only one finds it (the row's lock
                # on PostgreSQL, the single writer on SQLite); the CHECK backs it up.
                taken = session.execute(
                    update(models.Reward)
                    .where(models.Reward.id == reward.id, models.Reward.stock_left > 0)
                    .values(stock_left=models.Reward.stock_left - 1)
                    .execution_options(synchronize_session=False))
                if not taken.rowcount:  # type: ignore[attr-defined]
                    raise RewardRefusedError(f"{reward.name} is out of stock", reason="stock",
                                             reward=slug)
            entry = self._post(session, account, "reward", -reward.cost, key=key, source=key,
                               occurred_at=now, comment=reward.name, actor=actor,
                               details={"reward": slug, "name": reward.name})
            lots.debit(session, account, entry, reward.cost, spendable_at=now)
            claim = self._issue(session, reward, account, entry, via, now)
            entry.details = {**(entry.details or {}), "claim": claim.code}
            return Result.of(entry, duplicate=False)

        # The operation writes its entry under `key` or raises: the key's UNIQUE index is
        # the check, so a concurrent repeat refused by the original's claim (its limit, the
        # points it spent) answers with that claim.
        result = self._run(key, "reward", ref, operation, fingerprint, writes=True)
        with self.db.transaction(write=False) as session:
            row = session.execute(_claim_query().where(
                models.RewardClaim.entry_id == result.entry_id)).one()
        claim = _view(row)
        # On a repeat too (recorded once, by its transition): a process that died between
        # the claim's commit and this line left staff untold, and its retry tells them.
        if claim.status == "issued":
            triggers.record(self.db, [triggers.Transition(
                result.account_id, triggers.REWARD_CLAIMED, f"reward_claim:{claim.id}")],
                program=self.program)
        return Claimed(claim, result)

    def _check(self, session: Session, account: Account, reward: models.Reward,
               now: datetime) -> None:
        view = RewardView.of(reward)
        if not reward.active:
            raise RewardRefusedError(f"{reward.name} is no longer offered", reason="disabled",
                                     reward=reward.slug)
        if not view.open_at(now):
            when = "from " + reward.starts_at.isoformat() if reward.starts_at and \
                now < reward.starts_at else "until " + (reward.ends_at or now).isoformat()
            raise RewardRefusedError(f"{reward.name} can be claimed only {when}",
                                     reason="window", reward=reward.slug)
        if reward.min_tier is not None and self.program.tier_rank(account.tier) < \
                self.program.tier_rank(reward.min_tier):
            raise RewardRefusedError(
                f"{reward.name} is for {reward.min_tier} customers and above; this one is "
                f"{account.tier}", reason="tier", reward=reward.slug, tier=reward.min_tier)
        held = open_claims(session, reward.id, account.id) if reward.per_customer else 0
        if reward.per_customer is not None and held >= reward.per_customer:
            raise RewardRefusedError(
                f"{reward.name}: at most {reward.per_customer} per customer, and this customer "
                f"has claimed {held}", reason="limit", reward=reward.slug)
        if reward.stock_left == 0:
            raise RewardRefusedError(f"{reward.name} is out of stock", reason="stock",
                                     reward=reward.slug)
        available = lots.spendable(session, account, now)
        if available < reward.cost:
            raise RewardRefusedError(
                f"{reward.name} costs {from_minor(reward.cost)} points, "
                f"{from_minor(max(available, 0))} are spendable", reason="points",
                reward=reward.slug, available=str(from_minor(max(available, 0))))

    def _issue(self, session: Session, reward: models.Reward, account: Account, entry: Entry,
               via: str, now: datetime) -> models.RewardClaim:
        for _ in range(CODE_ATTEMPTS):
            claim = models.RewardClaim(reward_id=reward.id, account_id=account.id,
                                       code=alphabet.new_code(CODE_LENGTH), status="issued",
                                       cost=reward.cost, entry_id=entry.id, via=via,
                                       created_at=now)
            try:
                with session.begin_nested():
                    session.add(claim)
                    session.flush()
                return claim
            except IntegrityError:
                continue  # the code drawn is taken (31^10 codes: practically never)
        raise LedgerError("no free claim code drawn; try again")

    # -- after the claim -------------------------------------------------------------------
    def get(self, code: str) -> ClaimView:
        with self.db.transaction(write=False) as session:
            return _view(self._row(session, code))

    def list(self, *, open_only: bool = False, ref: AccountRef | None = None,
             limit: int = 200) -> list[ClaimView]:
        with self.db.transaction(write=False) as session:
            query = _claim_query().order_by(models.RewardClaim.id.desc()).limit(limit)
            if open_only:
                query = query.where(models.RewardClaim.status == "issued")
            if ref is not None:
                query = query.where(Account.crm == ref.crm, Account.portal == ref.portal,
                                    Account.contact_id == ref.contact_id)
            return [_view(row) for row in session.execute(query)]

    def handed(self, code: str, *, actor: str | None = None) -> ClaimView:
        """Mark the reward given over; again is harmless, a cancelled claim is refused."""
        with self.db.transaction() as session:
            claim = self._row(session, code, lock=True)[0]
            if claim.status == "cancelled":
                raise RewardRefusedError(f"claim {claim.code} was cancelled: its points went "
                                         "back, nothing to hand over", reason="cancelled")
            if claim.status == "issued":
                claim.status = "handed"
                claim.handed_at = self.clock()
        return self.get(claim.code)

    def cancel(self, code: str, *, actor: str | None = None) -> ClaimView:
        """Give the points back (with their original expiry) and the unit to the stock.
        Again is harmless; a claim already handed over is refused."""
        with self.db.transaction() as session:
            found = self._row(session, code)[0]
            account = session.get(Account, found.account_id, with_for_update=True)
            claim = session.get(models.RewardClaim, found.id, with_for_update=True,
                                populate_existing=True)
            assert account is not None and claim is not None
            if claim.status == "handed":
                raise RewardRefusedError(f"claim {claim.code} was handed over already; it "
                                         "cannot be cancelled", reason="handed")
            if claim.status == "issued":
                paid = session.get(Entry, claim.entry_id)
                assert paid is not None
                # What the claim's source still owes back: all of it, unless a reversal of
                # that source (reverse, by its key) already gave the points back.
                owed = -sum(e.amount for e in self._source_entries(session, account,
                                                                   paid.source or ""))
                if owed > 0:
                    entry = self._post(session, account, "reversal", owed,
                                       key=f"reward:cancel:{claim.id}", source=paid.source,
                                       occurred_at=self.clock(), comment=paid.comment,
                                       actor=actor, details={"reward_cancelled": claim.code})
                    self._refund(session, account, entry, owed, spent_by=[claim.entry_id])
                    claim.cancel_entry_id = entry.id
                claim.status = "cancelled"
                claim.cancelled_at = self.clock()
                session.flush()
                # The stock left is the stock less the claims still holding a unit, as the
                # catalogue sets it: a stock cut below the claims out gives no unit back.
                reward = session.get(models.Reward, claim.reward_id, with_for_update=True,
                                     populate_existing=True)
                assert reward is not None
                if reward.stock is not None:
                    reward.stock_left = max(0, reward.stock - open_claims(session, reward.id))
        return self.get(claim.code)

    def _row(self, session: Session, code: str, *, lock: bool = False) -> Any:
        normal = alphabet.normalize(code, CODE_LENGTH)
        query = _claim_query().where(models.RewardClaim.code == (normal or ""))
        if lock:
            query = query.with_for_update(of=models.RewardClaim)
        row = session.execute(query).one_or_none()
        if row is None:
            raise RewardNotFoundError(f"no reward claim with code {code!r}", claim=code)
        return row
