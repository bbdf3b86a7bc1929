"""What the connector last wrote to each CRM contact, so it writes only changes (coalesced
per contact) and recognises the contact-update events its own writes cause.

Shared by every CRM: which accounts are dirty, what they should show, marking them written,
and the contacts the CRM refused for good (deleted, or never there): those are left alone,
not retried every pass, until the contact changes in the CRM or an admin asks again.
A write-back claims the dirty contacts it takes (claimed_by/claimed_until on the mirror row),
so however many workers flush at once, each change is written once.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from connector import triggers
from connector.crm.models import ContactMirror
from connector.db import Database
from connector.ledger import queries
from connector.ledger.models import Account
from connector.ledger.views import AccountRef, AccountView
from connector.privacy.anonymous import not_erased
from connector.program import Program
from connector.triggers import Transition

Compare = Callable[[Mapping[str, str], Mapping[str, Any]], dict[str, str]]


@dataclass(frozen=True)
class Refusal:
    """A contact the CRM refused to update for good, and what it said."""

    account_id: int
    crm: str
    portal: str
    contact_id: str
    refused_at: datetime
    error: str


@dataclass(frozen=True)
class Dirty:
    """An account changed since it was last written: its contact and what was written."""

    account_id: int
    contact_id: str
    version: int
    written: dict[str, Any]
    claimed_by: str | None = None
    # What the account shows now, read with the claim (claimed_batches given a program).
    view: AccountView | None = None


def _row(session: Session, account_id: int) -> ContactMirror:
    row = session.get(ContactMirror, account_id, with_for_update=True)
    if row is None:
        row = ContactMirror(account_id=account_id, written_version=0, values={})
        session.add(row)
    return row


def dirty(db: Database, crm: str, portal: str, limit: int) -> list[Dirty]:
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(Account.id, Account.contact_id, Account.version, ContactMirror.values)
            .outerjoin(ContactMirror, ContactMirror.account_id == Account.id)
            .where(Account.crm == crm, Account.portal == portal,
                   Account.version > func.coalesce(ContactMirror.written_version, 0),
                   ContactMirror.refused_at.is_(None), not_erased(Account.contact_id))
            .order_by(Account.id).limit(limit))
        return [Dirty(a, c, v, dict(w or {})) for a, c, v, w in rows]


def claimer() -> str:
    """Who claims: host, process and thread, so two flushes never share a claim."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{threading.get_ident() % 10**9}"


def claim(db: Database, crm: str, portal: str, limit: int, *, owner: str, now: datetime,
          hold: timedelta, after: int = 0) -> list[Dirty]:
    """Up to `limit` dirty accounts (ids above `after`), claimed for `owner` (_claim)."""
    return _claim(db, crm, portal, limit, owner=owner, now=now, hold=hold, after=after)[0]


def _claim(db: Database, crm: str, portal: str, limit: int, *, owner: str, now: datetime,
           hold: timedelta, after: int = 0,
           program: Program | None = None) -> tuple[list[Dirty], bool]:
    """Up to `limit` dirty accounts (ids above `after`) that no other write-back holds,
    claimed for `owner` until `now + hold` (a claim whose worker died runs out then). One
    short transaction: on SQLite its BEGIN IMMEDIATE orders claimers; on PostgreSQL rows
    are locked in id order with SKIP LOCKED, so a row a concurrent claimer holds is left to
    it, and the next candidates are looked at instead. Also says whether more may be dirty
    past these (the candidates filled `limit`): if not, a further claim would find none.
    With a `program`, on PostgreSQL, each account's view is read in the same transaction
    (Dirty.view). Not on SQLite: there the claim holds the database's one write lock, which
    the inbox's stores wait for, and a read after it takes no lock at all."""
    free = or_(ContactMirror.claimed_until.is_(None), ContactMirror.claimed_until < now)
    candidates = (
        select(Account.id).outerjoin(ContactMirror, ContactMirror.account_id == Account.id)
        .where(Account.crm == crm, Account.portal == portal, Account.id > after,
               Account.version > func.coalesce(ContactMirror.written_version, 0),
               ContactMirror.refused_at.is_(None), not_erased(Account.contact_id),
               or_(ContactMirror.account_id.is_(None), free))
        .order_by(Account.id).limit(limit))
    insert = pg_insert if db.is_postgres else sqlite_insert
    with_views = program if db.is_postgres else None
    # Not durable: a claim lost with the database server leaves the contact unclaimed.
    with db.transaction(durable=False) as session:
        for _ in range(10):  # each round some other claimer committed first; a few suffice
            ids = list(session.scalars(candidates))
            if not ids:
                return [], False
            session.execute(insert(ContactMirror).values(
                [{"account_id": i, "written_version": 0, "values": {}} for i in ids])
                .on_conflict_do_nothing(index_elements=["account_id"]))
            # Rows locked in id order, skipping those another claimer holds: two claimers
            # with overlapping candidates never wait on each other in opposite orders
            # (PostgreSQL; SQLite's BEGIN IMMEDIATE already orders them, and has no FOR UPDATE).
            free_ids = list(session.scalars(
                select(ContactMirror.account_id)
                .where(ContactMirror.account_id.in_(ids), free)
                .order_by(ContactMirror.account_id)
                .with_for_update(skip_locked=True)))
            claimed = list(session.scalars(
                update(ContactMirror)
                .where(ContactMirror.account_id.in_(free_ids))
                .values(claimed_by=owner, claimed_until=now + hold)
                .returning(ContactMirror.account_id)
                .execution_options(synchronize_session=False))) if free_ids else []
            if claimed:
                rows = session.execute(
                    select(Account, ContactMirror.values)
                    .join(ContactMirror, ContactMirror.account_id == Account.id)
                    .where(Account.id.in_(claimed)).order_by(Account.id))
                return ([Dirty(a.id, a.contact_id, a.version, dict(w or {}), owner,
                               queries.account_view(session, with_views, a, now)
                               if with_views is not None else None) for a, w in rows],
                        len(ids) == limit)
    return [], True


def release(db: Database, items: Iterable[Dirty], settled: set[int] | None = None) -> None:
    """Give back claims not written (a failed call): the next flush tries them again.
    Those in `settled` were marked written or refused, their claims cleared with it."""
    held = [item for item in items
            if item.claimed_by and (settled is None or item.account_id not in settled)]
    if not held:
        return
    ids, owners = [i.account_id for i in held], {i.claimed_by for i in held}
    with db.transaction(durable=False) as session:
        session.execute(update(ContactMirror)
                        .where(ContactMirror.account_id.in_(ids),
                               ContactMirror.claimed_by.in_(owners))
                        .values(claimed_by=None, claimed_until=None)
                        .execution_options(synchronize_session=False))


Changes = Callable[[list[Dirty]], list[tuple[Dirty, dict[str, str]]]]


def claimed_batches(db: Database, crm: str, portal: str, *, size: int, limit: int,
                    clock: Callable[[], datetime], hold: timedelta, changes: Changes,
                    settled: set[int] | None = None, program: Program | None = None,
                    ) -> Iterator[list[tuple[Dirty, dict[str, str]]]]:
    """Full batches of (claimed account, its changes) to write, `size` at a time, up to
    `limit` accounts looked at; `changes` settles the unchanged ones itself. Claims are taken
    just before their batch is filled, and what a batch did not mark written is released
    when the caller comes back for the next one (or stops: close the iterator).
    `settled`: the caller adds the accounts it marked written or refused (their claims are
    gone); when that is all of them there is nothing to release, and no transaction.
    `program`: on PostgreSQL each claimed account's view comes with its claim (Dirty.view),
    one transaction fewer before the write than reading them afterwards."""
    owner, seen, after = claimer(), 0, 0
    batch: list[tuple[Dirty, dict[str, str]]] = []
    held: list[Dirty] = []
    try:
        while seen < limit:
            # Onwards from the last claim: each query skips what this flush already wrote.
            dirty, more = _claim(db, crm, portal, min(size - len(batch), limit - seen),
                                 owner=owner, now=clock(), hold=hold, after=after,
                                 program=program)
            if not dirty:
                break
            seen += len(dirty)
            after = max(d.account_id for d in dirty)
            held += dirty
            batch += changes(dirty)
            if len(batch) >= size:
                yield batch
                release(db, held, settled)
                batch, held = [], []
            if not more:  # a claim that would find nothing is a transaction for nothing
                break
        if batch:
            yield batch
    finally:
        release(db, held, settled)


def views(db: Database, program: Program, account_ids: list[int],
          now: datetime) -> dict[int, AccountView]:
    if not account_ids:
        return {}
    with db.transaction(write=False) as session:
        return {account.id: queries.account_view(session, program, account, now)
                for account in session.scalars(select(Account)
                                               .where(Account.id.in_(account_ids)))}


def wanted(db: Database, program: Program, account_ids: list[int], now: datetime,
           render: Callable[[AccountView, date | None], dict[str, str]],
           known: Mapping[int, AccountView] | None = None) -> dict[int, dict[str, str]]:
    """What each account's contact should show, rendered by the CRM's own mapping; the
    expiry date is the day in the program's time zone. `known`: views already read (with
    the write-back's claim); only the others are read here."""
    known = known or {}
    found = {i: known[i] for i in account_ids if i in known}
    found.update(views(db, program, [i for i in account_ids if i not in known], now))
    values = {}
    for account_id, view in found.items():
        expiring = view.next_expiry_at.astimezone(program.zone).date() \
            if view.next_expiry_at else None
        values[account_id] = render(view, expiring)
    return values


def mark_written(db: Database, item: Dirty, changes: Mapping[str, str], now: datetime) -> None:
    """The CRM now shows `changes` (on top of what it showed) for this account version."""
    mark_all_written(db, [(item, changes)], now)


def mark_all_written(db: Database, written: Sequence[tuple[Dirty, Mapping[str, str]]],
                     now: datetime, *, settled: set[int] | None = None) -> None:
    """mark_written for a whole batch, in one transaction (one commit for 50 contacts, not
    50). `settled`: the flush's record of accounts whose claims are gone (claimed_batches)."""
    if not written:
        return
    # Not durable: a mark lost with the database server means the same values written again.
    with db.transaction(durable=False) as session:
        for item, changes in written:
            row = _row(session, item.account_id)
            row.values = {**(row.values or {}), **changes}
            row.written_version = max(row.written_version or 0, item.version)
            row.written_at = now
            if item.claimed_by is not None and row.claimed_by == item.claimed_by:
                row.claimed_by = row.claimed_until = None
    if settled is not None:
        settled.update(item.account_id for item, _ in written)


def refuse(db: Database, item: Dirty, error: str, now: datetime, *,
           settled: set[int] | None = None) -> None:
    """The CRM refused this contact for good: write-back skips it until it changes."""
    with db.transaction() as session:
        row = _row(session, item.account_id)
        row.refused_at = now
        row.refused_error = error[:1000]
        if item.claimed_by is not None and row.claimed_by == item.claimed_by:
            row.claimed_by = row.claimed_until = None
    if settled is not None:
        settled.add(item.account_id)


def clear_refusal(db: Database, account_id: int) -> bool:
    """Write to the contact again (it was restored, or the cause was fixed in the CRM).
    Returns whether there was a refusal to clear."""
    with db.transaction() as session:
        row = session.get(ContactMirror, account_id, with_for_update=True)
        if row is None or row.refused_at is None:
            return False
        row.refused_at = row.refused_error = None
        return True


def refusals(db: Database, *, account_id: int | None = None,
             limit: int = 1000) -> list[Refusal]:
    """Contacts refused for good, the most recent first."""
    with db.transaction(write=False) as session:
        query = (select(Account.id, Account.crm, Account.portal, Account.contact_id,
                        ContactMirror.refused_at, ContactMirror.refused_error)
                 .join(ContactMirror, ContactMirror.account_id == Account.id)
                 .where(ContactMirror.refused_at.is_not(None))
                 .order_by(ContactMirror.refused_at.desc(), Account.id).limit(limit))
        if account_id is not None:
            query = query.where(Account.id == account_id)
        return [Refusal(*row[:5], error=row[5] or "") for row in session.execute(query)]


def count_refused(db: Database) -> int:
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(ContactMirror)
                              .where(ContactMirror.refused_at.is_not(None))) or 0


def remember_deal(db: Database, account_id: int, deal_id: str) -> None:
    """Keep the contact's most recent deal or lead: automation runs on deals."""
    with db.transaction() as session:
        _remember(session, account_id, deal_id)


def _remember(session: Session, account_id: int, deal_id: str) -> None:
    row = _row(session, account_id)
    current = row.latest_deal_id
    if current is None or int(deal_id) > int(current):
        row.latest_deal_id = deal_id


def deal_settled(db: Database, ref: AccountRef | None, deal_id: str,
                 transitions: Iterable[Transition], *, program: Program) -> None:
    """What a deal (or lead) settled in the ledger leaves besides its entries: the triggers
    it owes marketing, and the deal remembered as its contact's latest (automation runs on
    it). One transaction: the worker does this between the deal's read and the contact's
    write, where each transaction is time the manager waits."""
    transitions = list(transitions)
    if ref is None and not transitions:
        return
    with db.transaction() as session:
        triggers.add(session, transitions, program=program.settings)
        if ref is None:
            return
        account_id = session.scalar(select(Account.id).where(
            Account.crm == ref.crm, Account.portal == ref.portal,
            Account.contact_id == ref.contact_id))
        if account_id is not None:
            _remember(session, account_id, deal_id)


def latest_deals(db: Database, account_ids: list[int]) -> dict[int, str]:
    with db.transaction(write=False) as session:
        rows = session.execute(select(ContactMirror.account_id, ContactMirror.latest_deal_id)
                               .where(ContactMirror.account_id.in_(account_ids)))
        return {account_id: deal for account_id, deal in rows if deal}


def note_crm_values(db: Database, account_id: int, in_crm: Mapping[str, Any],
                    field_names: list[str], changed: Compare) -> bool:
    """A contact changed in the CRM. If our fields there differ from what we last wrote
    (someone edited them), remember the CRM's values and ask write-back to correct them.
    Our own writes echo back unchanged, so they cause nothing: no loop."""
    shown = {name: in_crm.get(name) for name in field_names}
    with db.transaction() as session:
        row = _row(session, account_id)
        # The contact is there and changed: a refusal of writes to it no longer holds.
        row.refused_at = row.refused_error = None
        if not changed({k: str(v or "") for k, v in (row.values or {}).items()}, shown):
            return False
        row.values = {**(row.values or {}), **{
            name: "" if value is None else str(value) for name, value in shown.items()}}
        row.written_version = 0
        return True
