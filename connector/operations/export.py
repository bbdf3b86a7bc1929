"""CSV of accounts and ledger entries for accounting: exact amounts (decimal strings from
integer minor units, never float), timestamps in ISO 8601 UTC, streamed row by row so a book
of millions of entries never sits in memory."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, case, false, func, literal, or_, select, true

from connector.db import Database
from connector.ledger.models import Account, Entry
from connector.money import from_minor

# Rows fetched from the server at a time (a server-side cursor on PostgreSQL).
BATCH = 1000

ACCOUNT_COLUMNS = ("crm", "portal", "contact_id", "card_number", "tier", "balance",
                   "purchase_count", "purchase_total", "created_at")
# `export accounts --at DAY`: the books as they stood at the end of DAY, rebuilt from entries.
# start_balance + earned + redeemed + expired + other = balance, account by account.
ACCOUNT_AT_COLUMNS = ("crm", "portal", "contact_id", "card_number", "start_balance", "earned",
                      "redeemed", "expired", "other", "balance")
# Which entry kinds make each column; every kind is in exactly one of them.
EARNED_KINDS = ("accrual", "bonus")
REDEEMED_KINDS = ("redemption", "reward")
EXPIRED_KINDS = ("expiry",)
OTHER_KINDS = ("reversal", "adjustment", "opening")
ENTRY_COLUMNS = ("id", "occurred_at", "crm", "portal", "contact_id", "kind", "points",
                 "balance_after", "idempotency_key", "source", "purchase_amount", "actor",
                 "comment")


class Writable(Protocol):
    def write(self, text: str, /) -> object: ...


def _money(minor: int | None) -> str:
    return "" if minor is None else str(from_minor(minor))


def _time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def account_rows(db: Database) -> Iterator[tuple[str | int | None, ...]]:
    query = select(Account.crm, Account.portal, Account.contact_id, Account.card_number,
                   Account.tier, Account.balance, Account.purchase_count,
                   Account.purchase_total, Account.created_at).order_by(Account.id)
    for (crm, portal, contact, card, tier, balance, count, total,
         created) in _stream(db, query):
        yield (crm, portal, contact, card, tier, _money(balance), count, _money(total),
               _time(created))


def account_rows_at(db: Database, until: datetime, since: datetime | None = None
                    ) -> Iterator[tuple[str | int | None, ...]]:
    """Every account that existed or had entries before `until`: its balance at `until`
    (the sum of its entries that occurred before it, which is how `verify` defines a balance),
    the balance at `since` (zero without one) and what moved in [since, until) by kind."""
    in_period = true() if since is None else Entry.occurred_at >= since
    before = false() if since is None else Entry.occurred_at < since

    def moved(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, Entry.amount), else_=0)), 0)

    sums = (select(Entry.account_id.label("account_id"),
                   moved(before).label("start"),
                   moved(in_period & Entry.kind.in_(EARNED_KINDS)).label("earned"),
                   moved(in_period & Entry.kind.in_(REDEEMED_KINDS)).label("redeemed"),
                   moved(in_period & Entry.kind.in_(EXPIRED_KINDS)).label("expired"),
                   moved(in_period & Entry.kind.in_(OTHER_KINDS)).label("other"),
                   func.sum(Entry.amount).label("balance"))
            .where(Entry.occurred_at < until)
            .group_by(Entry.account_id)
            .subquery())
    zero = literal(0)
    query = (select(Account.crm, Account.portal, Account.contact_id, Account.card_number,
                    func.coalesce(sums.c.start, zero), func.coalesce(sums.c.earned, zero),
                    func.coalesce(sums.c.redeemed, zero), func.coalesce(sums.c.expired, zero),
                    func.coalesce(sums.c.other, zero), func.coalesce(sums.c.balance, zero))
             .outerjoin(sums, sums.c.account_id == Account.id)
             .where(or_(Account.created_at < until, sums.c.account_id.is_not(None)))
             .order_by(Account.id))
    for crm, portal, contact, card, *amounts in _stream(db, query):
        # PostgreSQL sums BIGINT as NUMERIC: whole numbers either way.
        yield (crm, portal, contact, card, *(_money(int(amount)) for amount in amounts))


def entry_rows(db: Database, since: datetime | None = None,
               until: datetime | None = None) -> Iterator[tuple[str | int | None, ...]]:
    """Entries with since <= occurred_at < until, in the order they happened."""
    query = (select(Entry.id, Entry.occurred_at, Account.crm, Account.portal,
                    Account.contact_id, Entry.kind, Entry.amount, Entry.balance_after,
                    Entry.idempotency_key, Entry.source, Entry.purchase_amount, Entry.actor,
                    Entry.comment)
             .join(Account, Account.id == Entry.account_id)
             .order_by(Entry.occurred_at, Entry.id))
    if since is not None:
        query = query.where(Entry.occurred_at >= since)
    if until is not None:
        query = query.where(Entry.occurred_at < until)
    for (entry_id, occurred, crm, portal, contact, kind, amount, balance_after, key, source,
         purchase, actor, comment) in _stream(db, query):
        yield (entry_id, _time(occurred), crm, portal, contact, kind, _money(amount),
               _money(balance_after), key, source, _money(purchase), actor, comment)


def _stream(db: Database, query: Select[Any]) -> Iterator[tuple[Any, ...]]:
    with db.engine.connect() as connection:
        result = connection.execution_options(yield_per=BATCH).execute(query)
        for row in result:
            yield tuple(row)


def write_csv(out: Writable, columns: tuple[str, ...],
              rows: Iterator[tuple[str | int | None, ...]]) -> int:
    """Header, then every row; returns the number of rows written."""
    writer = csv.writer(out)
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
