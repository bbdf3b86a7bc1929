"""What an import would do, row by row, and why a row is refused: read and checked, contacts
found by phone / e-mail, duplicates, the books as they stand (an opening balance already
imported, a card number another customer holds, a referrer that cannot be linked). Reads
only; the writer applies the accepted rows and checks again under its locks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.db import Database
from connector.i18n import N_, Message, Text
from connector.imports.matching import Kind, LookupFailed, Matcher
from connector.imports.parse import Row, RowParser, RowRefused, expiry_moment
from connector.imports.progress import Progress
from connector.imports.rows import RawRow
from connector.ledger.models import Account, Entry
from connector.money import from_minor
from connector.program import Program
from connector.referrals.codes import normalize

Action = Literal["open", "update", "unchanged", "refused"]
# IN lists stay well under SQLite's bound on bound variables.
CHUNK = 500
# More contacts than this in a file: the portal's accounts are read in one pass instead.
WHOLE_PORTAL = 5000


@dataclass
class Decision:
    line: int
    contact_id: str | None
    action: Action
    detail: Text  # why, or what changes: rendered in program.language by the report
    row: Row | None = None
    account_id: int | None = None  # the existing account, when there is one
    opening: int = 0  # hundredths to credit; 0: no opening entry to write
    key: str | None = None
    expires_at: datetime | None = None
    tier: str | None = None  # values to set (None: keep as is)
    birthday: date | None = None
    card: str | None = None
    referrer_id: int | None = None  # an existing account
    referrer_contact: str | None = None  # a contact opened by this same import
    changes: list[Message] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.action != "refused"

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "contact_id": self.contact_id, "action": self.action,
                "detail": str(self.detail),  # English: JSON stays language-neutral
                "balance": None if self.row is None else self.row.balance_text}


def _named(kind: Kind, value: str) -> Message:
    """"phone +79990000001", "e-mail anna@example.com": what a row was matched by."""
    return N_("e-mail %(value)s", value=value) if kind == "email" else \
        N_("phone %(value)s", value=value)


def opening_key(crm: str, portal: str, contact_id: str) -> str:
    """One opening balance per contact: importing it again (the same file, or another one
    naming the contact) finds the key used and writes nothing."""
    key = f"import:opening:{crm}:{portal}:{contact_id}"
    if len(key) <= 255:
        return key
    return f"import:opening:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


@dataclass
class _Existing:
    id: int
    card: str | None
    tier: str
    birthday: date | None
    referred_by_id: int | None
    purchased: bool


class Planner:
    def __init__(self, db: Database, program: Program, crm: str, portal: str, *,
                 matcher: Matcher | None, now: datetime,
                 progress: Progress | None = None) -> None:
        self.db, self.program, self.crm, self.portal = db, program, crm, portal
        self.matcher = matcher
        self.now = now
        self.today = now.astimezone(program.zone).date()
        self.progress = progress or Progress()
        self.default_expiry = program.expires_at(now)  # of a row without an expiry date
        self._expiries: dict[date, datetime] = {}  # a file has few distinct expiry dates

    def _expiry(self, day: date) -> datetime:
        moment = self._expiries.get(day)
        if moment is None:
            moment = self._expiries[day] = expiry_moment(day, self.program)
        return moment

    def plan(self, raws: Iterable[RawRow]) -> list[Decision]:
        decisions: list[Decision] = []
        rows: list[Row] = []
        parse = RowParser(self.program, self.today).parse
        for raw in raws:
            try:
                rows.append(parse(raw))
            except RowRefused as exc:
                decisions.append(Decision(raw.line, raw.text("contact_id") or None, "refused",
                                          exc.message))
        decisions += self._match(rows)
        accepted = self._dedupe(rows, decisions)
        with self.db.transaction(write=False) as session:
            decisions += self._decide(session, accepted)
        decisions.sort(key=lambda d: d.line)
        return decisions

    # -- contacts by phone / e-mail --------------------------------------------------------
    def _match(self, rows: list[Row]) -> list[Decision]:
        """Rows without a contact id get theirs from the CRM; those it cannot name are
        refused (and removed from `rows`)."""
        wanted: dict[Kind, set[str]] = {"phone": set(), "email": set()}
        for row in rows:
            if row.contact_id is None:
                if row.phone:
                    wanted["phone"].add(row.phone)
                if row.email:
                    wanted["email"].add(row.email)
        found: dict[tuple[Kind, str], list[str] | LookupFailed] = {}
        if self.matcher is not None:
            for kind, values in wanted.items():
                self.progress.start(N_("finding contacts by phone") if kind == "phone" else
                                    N_("finding contacts by email"), len(values))
                for value, ids in self.matcher.find(kind, sorted(values),
                                                    self.progress.advance).items():
                    found[(kind, value)] = ids
                self.progress.finish()
        refused: list[Decision] = []
        kept: list[Row] = []
        for row in rows:
            if row.contact_id is not None:
                kept.append(row)
                continue
            try:
                row.contact_id = self._contact_of(row, found)
                kept.append(row)
            except RowRefused as exc:
                refused.append(Decision(row.line, None, "refused", exc.message, row))
        rows[:] = kept
        return refused

    def _contact_of(self, row: Row, found: dict[tuple[Kind, str], list[str] | LookupFailed]
                    ) -> str:
        if self.matcher is None:
            raise RowRefused(N_("%(crm)s is not enabled: a contact cannot be found by phone "
                                "or e-mail (give contact_id, or enable the CRM)", crm=self.crm))
        sets: list[tuple[Message, set[str]]] = []
        for kind, value in (("phone", row.phone), ("email", row.email)):
            if value is None:
                continue
            ids = found[(kind, value)]  # type: ignore[index]
            if isinstance(ids, LookupFailed):
                raise RowRefused(N_("could not look up %(what)s: %(reason)s",
                                    what=_named(kind, value), reason=str(ids)))
            sets.append((_named(kind, value), set(ids)))
        named = [(what, ids) for what, ids in sets if ids]
        if not named:
            raise RowRefused(N_("unknown contact: no contact in the CRM has %(what)s",
                                what=sets[0][0]) if len(sets) == 1 else N_(
                "unknown contact: no contact in the CRM has %(what)s or %(other)s",
                what=sets[0][0], other=sets[1][0]))
        common = set.intersection(*(ids for _, ids in named))
        if not common:
            # Two lists that do not meet: the phone's and the e-mail's.
            first, second = (N_("%(what)s is contact %(ids)s", what=what,
                                ids=", ".join(sorted(ids, key=int))) for what, ids in named)
            raise RowRefused(N_("%(first)s; %(second)s: not the same contact", first=first,
                                second=second))
        if len(common) > 1:
            raise RowRefused(N_("%(what)s matches %(count)s contacts (%(ids)s): give "
                                "contact_id", what=named[0][0], count=len(common),
                                ids=", ".join(sorted(common, key=int))))
        return common.pop()

    @staticmethod
    def _dedupe(rows: list[Row], decisions: list[Decision]) -> list[Row]:
        first: dict[str, int] = {}
        cards: dict[str, int] = {}
        kept = []
        for row in rows:
            assert row.contact_id is not None
            if row.contact_id in first:
                decisions.append(Decision(row.line, row.contact_id, "refused", N_(
                    "duplicate row: contact %(contact)s is on line %(line)s already",
                    contact=row.contact_id, line=first[row.contact_id]), row))
                continue
            if row.card is not None and row.card in cards:
                decisions.append(Decision(row.line, row.contact_id, "refused", N_(
                    "card number %(card)s is given on line %(line)s already", card=row.card,
                    line=cards[row.card]), row))
                continue
            first[row.contact_id] = row.line
            if row.card is not None:
                cards[row.card] = row.line
            kept.append(row)
        return kept

    # -- against the books -----------------------------------------------------------------
    def _decide(self, session: Session, rows: list[Row]) -> list[Decision]:
        contacts = [row.contact_id for row in rows if row.contact_id is not None]
        keys = {row.contact_id: opening_key(self.crm, self.portal, row.contact_id)
                for row in rows if row.contact_id is not None}
        given = [row.referrer for row in rows if row.referrer]
        cards = [row.card for row in rows if row.card]
        if len(contacts) > WHOLE_PORTAL:
            existing, holders, by_code, by_contact, uplines = self._whole(
                session, contacts, cards, given)
        else:
            existing = self._existing(session, contacts)
            holders = self._holders(session, cards)
            by_code, by_contact = self._referrers(session, given)
            uplines = None
        opened = self._opened(session, [keys[contact] for contact in existing])
        in_file = {row.contact_id for row in rows}
        referrers = _Referrers(session, self, by_code, by_contact, existing, uplines)
        decisions = []
        for row in rows:
            assert row.contact_id is not None
            try:
                decision = self._one(row, existing.get(row.contact_id), keys[row.contact_id],
                                     opened, holders, in_file, referrers)
            except RowRefused as exc:
                decision = Decision(row.line, row.contact_id, "refused", exc.message, row)
            decisions.append(decision)
        # A referrer opened by this import must be opened: until no more rows fall
        # (A names B, B names C, C is refused).
        while True:
            refused = {d.contact_id: d.line for d in decisions if not d.accepted}
            falling = [d for d in decisions
                       if d.accepted and d.referrer_contact in refused]
            if not falling:
                return decisions
            for decision in falling:
                decision.action = "refused"
                decision.detail = N_("referrer contact %(contact)s is on line %(line)s, which "
                                     "is refused", contact=decision.referrer_contact,
                                     line=refused[decision.referrer_contact])

    def _one(self, row: Row, account: _Existing | None, key: str, opened: dict[str, int],
             holders: dict[str, str], in_file: set[str], referrers: _Referrers) -> Decision:
        assert row.contact_id is not None
        decision = Decision(row.line, row.contact_id, "open" if account is None else "update",
                            "", row, account_id=account.id if account else None)
        minor = row.minor
        if key in opened:
            if opened[key] != minor:
                raise RowRefused(N_("an opening balance of %(imported)s was imported for "
                                    "contact %(contact)s already (this row says %(balance)s); "
                                    "change it with `adjust`",
                                    imported=str(from_minor(opened[key])),
                                    contact=row.contact_id, balance=row.balance_text))
        elif minor > 0:
            decision.opening, decision.key = minor, key
            if row.expires:
                decision.expires_at = self._expiry(row.expires)
                decision.changes.append(N_("opening balance %(balance)s expiring %(date)s",
                                           balance=row.balance_text,
                                           date=row.expires.isoformat()))
            else:
                decision.expires_at = self.default_expiry
                decision.changes.append(N_("opening balance %(balance)s",
                                           balance=row.balance_text))
        if row.card is not None:
            holder = holders.get(row.card)
            if holder is not None and holder != row.contact_id:
                raise RowRefused(N_("card number %(card)s is taken by contact %(holder)s",
                                    card=row.card, holder=holder))
            if account is None or account.card != row.card:
                decision.card = row.card
                decision.changes.append(N_("card %(card)s", card=row.card))
        if row.tier is not None and (account is None or account.tier != row.tier):
            decision.tier = row.tier
            decision.changes.append(N_("tier %(tier)s", tier=row.tier))
        if row.birthday is not None and (account is None or account.birthday != row.birthday):
            decision.birthday = row.birthday
            decision.changes.append(N_("birthday %(date)s", date=row.birthday.isoformat()))
        if row.referrer is not None:
            referrers.link(decision, row, account, in_file)
        if account is None:
            decision.detail = N_("new account: %(changes)s", changes=tuple(
                decision.changes)) if decision.changes else N_("new account")
        elif decision.changes:
            decision.detail = N_("existing account: %(changes)s",
                                 changes=tuple(decision.changes))
        else:
            decision.action = "unchanged"
            decision.detail = N_("already imported: nothing to change")
        return decision

    def _opened(self, session: Session, keys: list[str]) -> dict[str, int]:
        """Opening entries already written, by key (only an existing account has one)."""
        if len(keys) <= WHOLE_PORTAL:
            return dict(_chunked(session, lambda part: select(
                Entry.idempotency_key, Entry.amount).where(Entry.idempotency_key.in_(part)),
                keys))
        # Every opening entry, filtered here: no join for the planner to get wrong (with
        # statistics from before a bulk import, PostgreSQL nested-looped it for minutes).
        wanted = set(keys)
        return {key: amount for key, amount in session.connection().execute(
            select(Entry.idempotency_key, Entry.amount).where(Entry.kind == "opening")).all()
            if key in wanted}

    _ACCOUNT = (Account.contact_id, Account.id, Account.card_number, Account.tier,
                Account.birthday, Account.referred_by_id, Account.purchase_count,
                Account.first_purchase_at)

    @staticmethod
    def _existing_of(row: Any) -> _Existing:
        _, id_, card, tier, birthday, referred, count, first = row[:8]
        return _Existing(id_, card, tier, birthday, referred, bool(count) or first is not None)

    def _existing(self, session: Session, contacts: list[str]) -> dict[str, _Existing]:
        query = select(*self._ACCOUNT).where(Account.crm == self.crm,
                                             Account.portal == self.portal)
        return {row[0]: self._existing_of(row) for row in _chunked(
            session, lambda part: query.where(Account.contact_id.in_(part)), contacts)}

    def _holders(self, session: Session, cards: list[str]) -> dict[str, str]:
        """Who holds each card number the file gives (unique across every CRM and portal)."""
        return {card: self._holder(crm, portal, contact)
                for card, crm, portal, contact in _chunked(session, lambda part: select(
                    Account.card_number, Account.crm, Account.portal, Account.contact_id)
                    .where(Account.card_number.in_(part)), cards)}

    def _holder(self, crm: str, portal: str, contact: str) -> str:
        return contact if (crm, portal) == (self.crm, self.portal) \
            else f"{contact} of {crm} {portal}"

    def _referrers(self, session: Session, given: list[str]
                   ) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
        """The accounts of this CRM and portal that the referrers given name: by referral
        code, and by contact id."""
        codes = [code for code in (normalize(text) for text in given) if code]
        by_code = {code: (contact, id_) for code, contact, id_ in _chunked(
            session, lambda part: select(Account.referral_code, Account.contact_id,
                                         Account.id).where(
                Account.crm == self.crm, Account.portal == self.portal,
                Account.referral_code.in_(part)), codes)}
        by_contact = {contact: id_ for contact, id_ in _chunked(
            session, lambda part: select(Account.contact_id, Account.id).where(
                Account.crm == self.crm, Account.portal == self.portal,
                Account.contact_id.in_(part)), [text for text in given if text.isdigit()])}
        return by_code, by_contact

    def _whole(self, session: Session, contacts: list[str], cards: list[str], given: list[str]
               ) -> tuple[dict[str, _Existing], dict[str, str], dict[str, tuple[str, int]],
                          dict[str, int], dict[str, str]]:
        """What _existing, _holders and _referrers read, from one read of every account
        (a file of many contacts: one pass beats many IN lists, and a repeated import then
        reads the accounts once), and who referred each account of the portal (by contact:
        the cycle check then asks nothing per row)."""
        wanted, card_set = set(contacts), set(cards)
        codes = {code for code in (normalize(text) for text in given) if code}
        referrer_contacts = {text for text in given if text.isdigit()}
        existing: dict[str, _Existing] = {}
        holders: dict[str, str] = {}
        by_code: dict[str, tuple[str, int]] = {}
        by_contact: dict[str, int] = {}
        ours = (self.crm, self.portal)
        contact_of: dict[int, str] = {}
        referred: list[tuple[str, int]] = []
        for row in session.connection().execute(select(
                *self._ACCOUNT, Account.crm, Account.portal, Account.referral_code)).all():
            contact, id_, card, crm, portal, code = row[0], row[1], row[2], row[8], row[9], \
                row[10]
            if card is not None and card in card_set:
                holders[card] = self._holder(crm, portal, contact)
            contact_of[id_] = contact
            if (crm, portal) != ours:
                continue
            if row[5] is not None:
                referred.append((contact, row[5]))
            if contact in wanted:
                existing[contact] = self._existing_of(row)
            if code in codes:
                by_code[code] = (contact, id_)
            if contact in referrer_contacts:
                by_contact[contact] = id_
        uplines = {contact: contact_of[upline] for contact, upline in referred
                   if upline in contact_of}
        return existing, holders, by_code, by_contact, uplines


class _Referrers:
    """Who a row's referrer is (a referral code, or a contact id of this CRM and portal),
    and whether the link may be made: not oneself, no cycle, once, before a purchase."""

    def __init__(self, session: Session, planner: Planner,
                 by_code: dict[str, tuple[str, int]], by_contact: dict[str, int],
                 existing: dict[str, _Existing], uplines: dict[str, str] | None) -> None:
        self.session, self.planner = session, planner
        self.by_code, self.by_contact = by_code, by_contact
        self.existing = existing
        self.uplines = uplines  # every referred account's referrer, when read whole
        self.linked: dict[str, str] = {}  # contact -> its referrer's contact, by this import

    def link(self, decision: Decision, row: Row, account: _Existing | None,
             in_file: set[str]) -> None:
        assert row.contact_id is not None and row.referrer is not None
        referrer_contact, referrer_id = self._resolve(row.referrer, in_file)
        if referrer_contact == row.contact_id:
            raise RowRefused(N_("a customer cannot refer themselves"))
        if account is not None and account.referred_by_id is not None:
            if account.referred_by_id == referrer_id:
                return  # linked before: nothing to do
            raise RowRefused(N_("contact %(contact)s is already referred by another "
                                "customer (a link is made once)", contact=row.contact_id))
        if account is not None and account.purchased:
            raise RowRefused(N_("contact %(contact)s has already made a purchase; a "
                                "referrer is linked before the first one",
                                contact=row.contact_id))
        if self._cycle(row.contact_id, referrer_contact):
            raise RowRefused(N_("referrer %(referrer)s is referred by contact %(contact)s "
                                "(directly or further up): that is a cycle",
                                referrer=row.referrer, contact=row.contact_id))
        self.linked[row.contact_id] = referrer_contact
        decision.referrer_id = referrer_id
        decision.referrer_contact = None if referrer_id is not None else referrer_contact
        decision.changes.append(N_("referred by %(contact)s", contact=referrer_contact))

    def _resolve(self, text: str, in_file: set[str]) -> tuple[str, int | None]:
        code = normalize(text)
        if code is not None and code in self.by_code:
            contact, id_ = self.by_code[code]
            return contact, id_
        if text.isdigit():
            if text in self.by_contact:
                return text, self.by_contact[text]
            if text in in_file:
                return text, None
            raise RowRefused(N_("referrer contact %(contact)s has no loyalty account and is "
                                "not in this file", contact=text))
        raise RowRefused(N_("referral code %(code)s names nobody", code=code))

    def _cycle(self, contact: str, referrer: str) -> bool:
        seen: set[str] = set()
        current: str | None = referrer
        while current is not None and current not in seen:
            if current == contact:
                return True
            seen.add(current)
            current = self.linked.get(current) or self._stored_referrer(current)
        return False

    def _stored_referrer(self, contact: str) -> str | None:
        if self.uplines is not None:
            return self.uplines.get(contact)
        planner = self.planner
        account = self.existing.get(contact)
        if account is not None:
            upline = account.referred_by_id
        else:
            upline = self.session.scalar(select(Account.referred_by_id).where(
                Account.crm == planner.crm, Account.portal == planner.portal,
                Account.contact_id == contact))
        if upline is None:
            return None
        return self.session.scalar(select(Account.contact_id).where(Account.id == upline))


def _chunked(session: Session, query: Callable[[list[Any]], Any], values: list[Any]
             ) -> Iterator[Any]:
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), CHUNK):
        yield from session.connection().execute(query(unique[start:start + CHUNK]))
