"""Writing the accepted rows in bulk, under the ledger's invariants.

An operation of the ledger writes one entry in one transaction (about 2 ms); 100,000 rows
that way take minutes. Here a transaction takes `CHUNK` rows at once, with multi-row
INSERTs, and keeps what `Postings` keeps per operation:
- every opening is an entry of kind 'opening' (amount > 0) under its UNIQUE idempotency key,
  with `balance_after`, and a lot of the same amount with the row's expiry (an overdraft
  the account carries is paid first, as `lots.credit` does);
- the account's balance moves in the same transaction, and its version goes up, so the
  write-back sends the contact (new accounts start at version 1, as `Postings` opens them);
- existing accounts are locked (`FOR UPDATE` on PostgreSQL; SQLite's write lock is held by
  the transaction) and read again under the lock, and keys used meanwhile are left alone.
The imported accounts are verified (balance = sum of entries = lots less overdraft) at the
end, as `loyalty-connector verify` would.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.codes.alphabet import ALPHABET
from connector.db import Database
from connector.errors import LedgerError
from connector.i18n import N_
from connector.imports.bulk import insert_rows
from connector.imports.plan import Decision
from connector.imports.progress import Progress
from connector.ledger import queries
from connector.ledger.models import Account, Entry, Lot
from connector.money import from_minor
from connector.program import Program
from connector.referrals.codes import CODE_LENGTH
from connector.referrals.models import ReferralEvent

CHUNK = 10_000  # rows per transaction (SQLite's write lock is held about a second)
ACTOR = "import"
IN_LIST = 500  # ids in one IN list: well under SQLite's bound on bound variables


@dataclass
class ApplyReport:
    opened: int = 0
    updated: int = 0
    entries: int = 0
    points: int = 0  # hundredths credited
    links: int = 0
    skipped: int = 0  # written by someone else between plan and write
    account_ids: list[int] = field(default_factory=list)
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accounts_opened": self.opened, "accounts_updated": self.updated,
                "opening_entries": self.entries, "points": str(from_minor(self.points)),
                "referrals_linked": self.links, "skipped": self.skipped,
                "verified": self.checked, "mismatches": self.mismatches}


class Writer:
    def __init__(self, db: Database, program: Program, crm: str, portal: str, *,
                 now: datetime, source: str, progress: Progress | None = None) -> None:
        self.db, self.program, self.crm, self.portal = db, program, crm, portal
        self.now = now
        self.source = source  # the file's name, kept on each entry
        self.progress = progress or Progress()
        self.base_tier = program.settings.tiers[0].name
        self.taken_cards: set[str] = set()
        self.taken_codes: set[str] = set()

    def apply(self, decisions: list[Decision]) -> ApplyReport:
        report = ApplyReport()
        work = [d for d in decisions if d.action in ("open", "update")]
        ids: dict[str, int] = {}
        # Numbers drawn for new cards keep clear of every card the file gives, in any chunk,
        # and of those issued (read once: one scan beats an IN list per chunk).
        issued: list[Any] = []
        if work:  # a repeated import (every row unchanged) has nothing to write
            with self.db.transaction(write=False) as session:
                issued = session.connection().execute(
                    select(Account.card_number, Account.referral_code)).all()
        self.taken_cards = {d.card for d in work if d.card} | {c for c, _ in issued if c}
        self.taken_codes = {code for _, code in issued if code}
        self.progress.start(N_("writing"), len(work))
        try:
            for start in range(0, len(work), CHUNK):
                chunk = work[start:start + CHUNK]
                with self.db.transaction() as session:
                    ids.update(self._chunk(session, chunk, report))
                self.progress.advance(len(chunk))
        except IntegrityError as exc:
            # Another process wrote one of these contacts, keys or card numbers meanwhile.
            raise LedgerError(
                f"stopped after {report.opened + report.updated} accounts: a contact, card "
                f"number or opening was written by another process meanwhile "
                f"({type(exc.orig).__name__}); run the import again: what is written stays "
                "and is not written twice") from None
        finally:
            self.progress.finish()
        report.links = self._link(decisions, ids)
        report.account_ids = sorted(set(ids.values()))
        with self.db.transaction(write=False) as session:
            report.checked, problems = queries.verify(session, report.account_ids)
        report.mismatches = [str(problem) for problem in problems]
        return report

    # -- one transaction -------------------------------------------------------------------
    def _chunk(self, session: Session, chunk: list[Decision], report: ApplyReport
               ) -> dict[str, int]:
        contacts = [d.contact_id for d in chunk if d.contact_id is not None]
        # Read again under the lock: the plan's view may be minutes old (CRM lookups).
        current = {contact: (id_, balance, overdraft) for contact, id_, balance, overdraft in
                   session.execute(self._locked(select(
                       Account.contact_id, Account.id, Account.balance, Account.overdraft)
                       .where(Account.crm == self.crm, Account.portal == self.portal,
                              Account.contact_id.in_(contacts))
                       .order_by(Account.id)))}  # rows locked in id order: no deadlock
        used = set(session.scalars(select(Entry.idempotency_key).where(
            Entry.idempotency_key.in_([d.key for d in chunk if d.key]))))
        for decision in chunk:
            if decision.key in used:
                decision.opening, decision.key = 0, None
                report.skipped += 1
        new = [d for d in chunk if d.contact_id not in current]
        ids = {contact: id_ for contact, (id_, _, _) in current.items()}
        balances = {id_: (balance, overdraft) for id_, balance, overdraft in current.values()}
        ids.update(self._open(session, new))
        report.opened += len(new)
        report.updated += self._update(session, [d for d in chunk if d.contact_id in current],
                                       ids, balances)
        openings = [d for d in chunk if d.opening > 0]
        self._openings(session, openings, ids, balances, {d.contact_id for d in new})
        report.entries += len(openings)
        report.points += sum(d.opening for d in openings)
        return ids

    def _locked(self, query: Any) -> Any:
        return query.with_for_update() if self.db.is_postgres else query

    def _open(self, session: Session, new: list[Decision]) -> dict[str, int]:
        if not new:
            return {}
        cards = _draw(_cards, len(new), self.taken_cards)
        codes = _draw(_codes, len(new), self.taken_codes)
        rows = [{
            "crm": self.crm, "portal": self.portal, "contact_id": d.contact_id,
            "card_number": d.card or cards[n], "referral_code": codes[n],
            "balance": d.opening, "overdraft": 0, "tier": d.tier or self.base_tier,
            "tier_changed_at": self.now if d.tier else None, "purchase_count": 0,
            "purchase_total": 0, "birthday": d.birthday, "version": 1,
            "created_at": self.now, "updated_at": self.now,
        } for n, d in enumerate(new)]
        # An executemany (connector.imports.bulk); the ORM's bulk insert with RETURNING
        # sends a row at a time on SQLite, fifty times slower.
        before = session.scalar(select(func.coalesce(func.max(Account.id), 0)))
        insert_rows(session, Account.__table__, rows)
        # The new rows' ids are above the largest before (SQLite's write lock, PostgreSQL's
        # sequence); another process's rows there are not ours and are left out.
        wanted = {d.contact_id for d in new}
        return {contact: id_ for contact, id_ in session.connection().execute(
            select(Account.contact_id, Account.id).where(
                Account.id > before, Account.crm == self.crm, Account.portal == self.portal))
            if contact in wanted}

    def _update(self, session: Session, existing: list[Decision], ids: dict[str, int],
                balances: dict[int, tuple[int, int]]) -> int:
        changed = 0
        for decision in existing:
            assert decision.contact_id is not None
            account_id = ids[decision.contact_id]
            values: dict[str, Any] = {}
            if decision.tier is not None:
                values.update(tier=decision.tier, tier_changed_at=self.now)
            if decision.birthday is not None:
                values["birthday"] = decision.birthday
            if decision.card is not None:
                values["card_number"] = decision.card
            if decision.opening > 0:
                balance, overdraft = balances[account_id]
                paid = min(overdraft, decision.opening)
                values.update(balance=balance + decision.opening, overdraft=overdraft - paid)
            if not values:
                continue
            session.execute(update(Account).where(Account.id == account_id).values(
                **values, version=Account.version + 1, updated_at=self.now))
            changed += 1
        return changed

    def _openings(self, session: Session, openings: list[Decision], ids: dict[str, int],
                  balances: dict[int, tuple[int, int]], new: set[str | None]) -> None:
        if not openings:
            return
        rows = []
        pays: list[int] = []  # what of each opening goes into its lot (after an overdraft)
        for d in openings:
            assert d.contact_id is not None
            account_id = ids[d.contact_id]
            balance, overdraft = (0, 0) if d.contact_id in new else balances[account_id]
            pays.append(d.opening - min(overdraft, d.opening))
            rows.append({
                "account_id": account_id, "kind": "opening", "amount": d.opening,
                "idempotency_key": d.key, "source": d.key, "purchase_count": 0,
                "shortfall": 0, "balance_after": balance + d.opening,
                "comment": f"opening balance imported from {self.source}, line {d.line}",
                "actor": ACTOR, "details": None,  # the lot holds the expiry
                "occurred_at": self.now, "created_at": self.now})
        before = session.scalar(select(func.coalesce(func.max(Entry.id), 0)))
        insert_rows(session, Entry.__table__, rows)
        by_key = dict(session.connection().execute(select(Entry.idempotency_key, Entry.id)
                                                   .where(Entry.id > before)).all())
        entry_ids = [by_key[row["idempotency_key"]] for row in rows]
        lots = [{"account_id": row["account_id"], "entry_id": entry_id, "amount": pay,
                 "remaining": pay, "earned_at": self.now, "available_at": self.now,
                 "expires_at": d.expires_at}
                for row, entry_id, pay, d in zip(rows, entry_ids, pays, openings, strict=True)
                if pay > 0]
        if lots:
            insert_rows(session, Lot.__table__, lots)

    # -- referrers, once every account exists ----------------------------------------------
    def _link(self, decisions: list[Decision], ids: dict[str, int]) -> int:
        """Each chunk in one transaction: the accounts read (and locked) in one query per
        500, the links written by one executemany and the events by one INSERT."""
        links = [d for d in decisions if d.accepted and (d.referrer_id or d.referrer_contact)]
        linked = 0
        for start in range(0, len(links), CHUNK):
            with self.db.transaction() as session:
                linked += self._link_chunk(session, links[start:start + CHUNK], ids)
        return linked

    def _link_chunk(self, session: Session, links: list[Decision], ids: dict[str, int]
                    ) -> int:
        wanted: dict[int, int | None] = {}  # account -> its referrer
        for d in links:
            assert d.contact_id is not None
            wanted[ids[d.contact_id]] = d.referrer_id or ids.get(d.referrer_contact or "")
        accounts = sorted(wanted)  # rows locked in id order: no deadlock
        state = {}
        for part in range(0, len(accounts), IN_LIST):
            state.update((id_, (referred, count)) for id_, referred, count in session.execute(
                self._locked(select(Account.id, Account.referred_by_id, Account.purchase_count)
                             .where(Account.id.in_(accounts[part:part + IN_LIST]))
                             .order_by(Account.id))))
        # Linked or bought meanwhile: the link is made once, before a first purchase.
        made = [(account, referrer) for account, referrer in wanted.items()
                if referrer is not None and state[account] == (None, 0)]
        if not made:
            return 0
        referrers = sorted({referrer for _, referrer in made})
        codes: dict[int, str | None] = {}
        for part in range(0, len(referrers), IN_LIST):
            codes.update(session.execute(select(Account.id, Account.referral_code).where(
                Account.id.in_(referrers[part:part + IN_LIST]))).all())
        session.connection().execute(
            update(Account).where(Account.id == bindparam("account"))
            .values(referred_by_id=bindparam("referrer"), updated_at=self.now),
            [{"account": account, "referrer": referrer} for account, referrer in made])
        insert_rows(session, ReferralEvent.__table__, [
            {"account_id": account, "referrer_id": referrer, "code": codes.get(referrer),
             "outcome": "linked", "detail": None, "via": "import", "created_at": self.now}
            for account, referrer in made])
        return len(made)


def _draw(draw: Callable[[int], list[str]], count: int, taken: set[str]) -> list[str]:
    """`count` new values for a UNIQUE column, none in `taken` (which then holds them too),
    drawn `count` at a time. A value issued by another process meanwhile makes the chunk's
    INSERT fail: the import stops with a LedgerError and a second run goes on from there."""
    values: list[str] = []
    while len(values) < count:
        for value in draw(count - len(values)):
            if value not in taken:
                taken.add(value)
                values.append(value)
    return values


def _luhn_table(doubled_first: bool) -> list[int]:
    """Luhn sums of every 3-digit group, by its value: the group's digits are doubled at
    the odd or at the even places from the right, as its place in the number wants."""
    table = []
    for value in range(1000):
        total = 0
        for position, char in enumerate(reversed(f"{value:03d}")):
            digit = int(char) * (2 if (position % 2 == 0) == doubled_first else 1)
            total += digit - 9 if digit > 9 else digit
        table.append(total)
    return table


# A 9-digit body ABC (3 digits each) has its rightmost digit doubled: so do C's and A's
# rightmost, B's middle one.
_LUHN_OUTER, _LUHN_MIDDLE = _luhn_table(True), _luhn_table(False)


def _cards(count: int) -> list[str]:
    """As referrals.codes.new_card_number draws them: nine digits, the first never 0, and a
    Luhn digit (luhn_digit's, from sums of 3-digit groups); one read of `secrets` for all."""
    data = secrets.token_bytes(8 * count)
    cards = []
    for n in range(count):
        # 64 random bits folded onto 900,000,000 values: a bias under 1e-10.
        body = 100_000_000 + int.from_bytes(data[8 * n:8 * n + 8]) % 900_000_000
        high, rest = divmod(body, 1_000_000)
        middle, low = divmod(rest, 1000)
        total = _LUHN_OUTER[high] + _LUHN_MIDDLE[middle] + _LUHN_OUTER[low]
        cards.append(f"{body}{(10 - total % 10) % 10}")
    return cards


_LIMIT = 256 - 256 % len(ALPHABET)
_TO_ALPHABET = bytes(ord(ALPHABET[byte % len(ALPHABET)]) for byte in range(256))
_ABOVE_LIMIT = bytes(range(_LIMIT, 256))


def _codes(count: int) -> list[str]:
    """As referrals.codes.new_code draws them: bytes of one `secrets` read below the largest
    multiple of the alphabet's size are taken (so every character is equally likely), the
    rest dropped; a short read is topped up by the caller (_draw)."""
    data = secrets.token_bytes(CODE_LENGTH * count + CODE_LENGTH * count // 8 + CODE_LENGTH)
    text = data.translate(_TO_ALPHABET, _ABOVE_LIMIT).decode("ascii")
    return [text[start:start + CODE_LENGTH]
            for start in range(0, len(text) - CODE_LENGTH + 1, CODE_LENGTH)][:count]
