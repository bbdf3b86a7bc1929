"""Read-only views of the ledger: an account's state, its history, the books' consistency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, func, select, true
from sqlalchemy.orm import Session

from connector.errors import AccountNotFoundError
from connector.ledger import spend
from connector.ledger.models import Account, Entry, Lot
from connector.ledger.postings import BY_CONTACT
from connector.ledger.views import AccountRef, AccountView, EntryView
from connector.money import from_minor
from connector.program import Program
from connector.referrals import stats as referrals

# Accounts per verify query when only some are checked (SQLite's bound on variables).
VERIFY_CHUNK = 5000


# Built once, not per view: building a statement and its cache key cost as much CPU as
# running it.
HELD_LOTS = select(Lot.remaining, Lot.available_at, Lot.expires_at).where(
    Lot.account_id == bindparam("account_id"), Lot.remaining > 0)
# The figures kept outside the account row, in one row: the referral figures and, when the
# kept rolling spend does not answer for the view's window, the spend summed.
FIGURES = select(*referrals.FOR_VIEW)
FIGURES_AND_SPEND = select(*referrals.FOR_VIEW, spend.WINDOW_SUM)


def find_account(session: Session, ref: AccountRef) -> Account:
    account = session.scalar(BY_CONTACT, {"crm": ref.crm, "portal": ref.portal,
                                          "contact": ref.contact_id})
    if account is None:
        raise AccountNotFoundError(f"no loyalty account for {ref}", ref=str(ref))
    return account


@dataclass(frozen=True)
class Holdings:
    """What an account's lots with points left hold at a moment (hundredths)."""

    available: int  # spendable now, before the account's overdraft
    pending: int  # not spendable yet
    expiring: int  # expiring next, on the same local day as the first to expire
    expires_at: datetime | None


def holdings(session: Session, program: Program, account_id: int, now: datetime) -> Holdings:
    """One read of the account's lots with points left, for the three figures the view
    shows (it read the same rows three times). Those are all lots not yet spent or expired:
    the next expiry needed every one of them already."""
    rows = session.connection().execute(HELD_LOTS, {"account_id": account_id}).all()
    available = sum(remaining for remaining, at, _ in rows if at <= now)
    upcoming = sorted((at, remaining) for remaining, _, at in rows if at and at > now)
    if not upcoming:
        return Holdings(available, sum(r for r, _, _ in rows) - available, 0, None)
    first = upcoming[0][0]
    day = first.astimezone(program.zone).date()
    expiring = sum(remaining for at, remaining in upcoming
                   if at.astimezone(program.zone).date() == day)
    return Holdings(available, sum(r for r, _, _ in rows) - available, expiring, first)


def account_view(session: Session, program: Program, account: Account,
                 now: datetime) -> AccountView:
    held = holdings(session, program, account.id, now)
    # The kept rolling spend when it answers for this window (connector.ledger.spend), else
    # summed with the other figures (read only: nothing is stored).
    window_start = program.tier_window_start(now)
    kept = spend.answers(account, window_start)
    figures = session.connection().execute(
        FIGURES if kept else FIGURES_AND_SPEND,
        {"account_id": account.id, "referrer_id": account.referred_by_id,
         "start": window_start}).one()
    referred_by, referred = referrals.read_view(figures[:4])
    qualifying = from_minor(account.tier_spend if kept else int(figures[4] or 0))
    tier = program.tier_named(account.tier)
    upcoming = program.next_tier(qualifying, tier.name)
    return AccountView.build(
        account,
        available=max(from_minor(held.available - account.overdraft), Decimal("0.00")),
        pending=from_minor(held.pending),
        discount_percent=tier.discount_percent,
        qualifying_spend=qualifying,
        next_tier=upcoming[0].name if upcoming else None,
        spend_to_next_tier=upcoming[1] if upcoming else None,
        next_expiry_points=from_minor(held.expiring),
        next_expiry_at=held.expires_at,
        referred_by=referred_by,
        referrals=referred,
    )


def history(session: Session, account: Account, *, limit: int = 50,
            before_id: int | None = None) -> list[EntryView]:
    query = select(Entry).where(Entry.account_id == account.id)
    if before_id is not None:
        query = query.where(Entry.id < before_id)
    return [EntryView.of(e) for e in session.scalars(query.order_by(Entry.id.desc())
                                                      .limit(limit))]


def bonus_names(session: Session, account_id: int) -> set[str]:
    """The names of the bonuses the account was granted (a handful per account)."""
    details = session.scalars(select(Entry.details).where(Entry.account_id == account_id,
                                                          Entry.kind == "bonus"))
    return {str(d["bonus"]) for d in details if d and "bonus" in d}


@dataclass(frozen=True)
class Mismatch:
    account_id: int
    ref: AccountRef
    stored: Decimal
    from_entries: Decimal
    from_lots: Decimal
    # The kept rolling spend and its earliest date against the entries, when they differ.
    spend: tuple[Decimal, datetime | None, Decimal, datetime | None] | None = None

    def __str__(self) -> str:
        text = (f"account {self.account_id} ({self.ref}): stored balance {self.stored}, "
                f"sum of entries {self.from_entries}, lots less overdraft {self.from_lots}")
        if self.spend is not None:
            kept, kept_oldest, summed, oldest = self.spend
            text += (f"; kept tier spend {kept} (earliest {_date(kept_oldest)}), "
                     f"entries {summed} (earliest {_date(oldest)})")
        return text


def _date(value: datetime | None) -> str:
    return value.isoformat() if value else "none"


def verify(session: Session, account_ids: Sequence[int] | None = None
           ) -> tuple[int, list[Mismatch]]:
    """Recompute every balance (or those of `account_ids`) from entries and from lots;
    return (accounts, mismatches)."""
    if account_ids is None:
        return _verify(session, None, None)
    # By ranges of ids rather than IN lists: accounts written together have ids close by.
    ids = sorted(set(account_ids))
    checked, problems = 0, []
    for start in range(0, len(ids), VERIFY_CHUNK):
        part = ids[start:start + VERIFY_CHUNK]
        count, found = _verify(session, (part[0], part[-1]), set(part))
        checked, problems = checked + count, problems + found
    return checked, problems


def _verify(session: Session, bounds: tuple[int, int] | None, only: set[int] | None
            ) -> tuple[int, list[Mismatch]]:
    entries, lots_of, accounts = (
        (Entry.account_id.between(*bounds), Lot.account_id.between(*bounds),
         Account.id.between(*bounds)) if bounds else (true(), true(), true()))
    # Core rows (the session's connection): plain tuples, no ORM loading per row.
    connection = session.connection()
    entry_sums = dict(connection.execute(
        select(Entry.account_id, func.sum(Entry.amount)).where(entries)
        .group_by(Entry.account_id)).all())
    lot_sums = dict(connection.execute(
        select(Lot.account_id, func.sum(Lot.remaining)).where(lots_of)
        .group_by(Lot.account_id)).all())
    # The kept rolling spend (connector.ledger.spend): the entries dated since its start.
    spend_sums = {account_id: (int(total or 0), oldest) for account_id, total, oldest in
                  connection.execute(
                      select(Account.id, func.sum(Entry.purchase_amount),
                             func.min(Entry.purchase_at))
                      .join(Entry, (Entry.account_id == Account.id)
                            & (Entry.purchase_at >= Account.tier_spend_since))
                      .where(accounts, Account.tier_spend_since.is_not(None))
                      .group_by(Account.id))}
    checked = 0
    problems = []
    rows = connection.execute(select(Account.id, Account.crm, Account.portal, Account.contact_id,
                                     Account.balance, Account.overdraft, Account.tier_spend,
                                     Account.tier_spend_since, Account.tier_spend_oldest)
                              .where(accounts))
    for account_id, crm, portal, contact, balance, overdraft, kept, since, kept_oldest in rows:
        if only is not None and account_id not in only:
            continue
        checked += 1
        from_entries = int(entry_sums.get(account_id) or 0)
        from_lots = int(lot_sums.get(account_id) or 0) - overdraft
        summed, oldest = spend_sums.get(account_id, (0, None))
        spend_off = since is not None and (kept, kept_oldest) != (summed, oldest)
        if not balance == from_entries == from_lots or spend_off:
            problems.append(Mismatch(
                account_id, AccountRef(crm, portal, contact), from_minor(balance),
                from_minor(from_entries), from_minor(from_lots),
                (from_minor(kept), kept_oldest, from_minor(summed), oldest)
                if spend_off else None))
    return checked, problems
