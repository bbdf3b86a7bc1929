"""Erase one contact's personal data in one transaction, keeping its amounts.

What goes, per table:
- accounts: the contact id becomes an anonymous `erased-<random>`; birthday, card number and
  referral code are cleared (the referral link to a referrer and from friends stays, counted);
- entries: the raw CRM record kept beside each (`source_data`) and the request fingerprint
  (a hash of a request naming the contact) are cleared; keys that named the contact (the
  welcome bonus, yearly bonuses) name the anonymous id instead, so they still say "done";
- inbox_events: received events about the contact (its own contact events; amoCRM lead
  webhooks of its leads, which carry names and field values) lose their body; those still
  waiting are skipped;
- contact_mirror (what was written to the contact), card_links (the card page dies with
  it), pending triggers (cancelled), referral_events' codes and texts;
- nps_answers: the raw record kept beside each answer (a deal, a request) is cleared; the
  scores stay.

Amounts, lots, purchase figures, tiers and segments stay: `verify` balances and the
statistics count the customer as before. Erasing again finds no account under that contact
and changes nothing (events about the contact that arrived since are scrubbed).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import delete, null, or_, select, update
from sqlalchemy.orm import Session

from connector.card.models import CardLink
from connector.crm.models import ContactMirror, TriggerEvent
from connector.db import Database
from connector.imports.plan import opening_key
from connector.inbox import InboxEvent
from connector.ledger.models import Account, Entry
from connector.ledger.views import AccountRef
from connector.nps.models import NPSAnswer
from connector.privacy import anonymous
from connector.privacy.models import Erasure
from connector.referrals.models import ReferralEvent
from mappings import amocrm as amo
from mappings import bitrix24 as b24
from mappings.phpquery import QueryError, decode

log = logging.getLogger(__name__)

SCRUBBED = "personal data erased"
SCAN_BATCH = 500


@dataclass(frozen=True)
class ErasureReport:
    anonymous_id: str | None
    removed: dict[str, int] = field(default_factory=dict)
    erasure_id: int | None = None

    @property
    def nothing(self) -> bool:
        return self.anonymous_id is None and not any(self.removed.values())

    def as_json(self) -> dict[str, Any]:
        return {"erased": not self.nothing, "anonymous_id": self.anonymous_id,
                "erasure_id": self.erasure_id, "removed": dict(self.removed)}


def erase(db: Database, ref: AccountRef, *, reason: str, by: str,
          clock: Callable[[], datetime]) -> ErasureReport:
    """Erase the personal data of `ref`'s contact; see the module's docstring."""
    if anonymous.is_erased(ref.contact_id):
        return ErasureReport(None)  # already anonymous: nothing of a person is left
    with db.transaction() as session:
        account = session.scalar(
            select(Account).where(Account.crm == ref.crm, Account.portal == ref.portal,
                                  Account.contact_id == ref.contact_id).with_for_update())
        removed: dict[str, int] = {}
        anonymous_id = None
        leads: set[str] = set()
        if account is not None:
            leads = _lead_ids(session, account.id, ref)
            anonymous_id = _erase_account(session, account, ref, removed, clock())
        removed["inbox_events"] = _scrub_inbox(session, ref, leads, clock())
        report = ErasureReport(anonymous_id, removed)
        if report.nothing:
            return report
        row = Erasure(crm=ref.crm, portal=ref.portal,
                      account_id=account.id if account is not None else None,
                      anonymous_id=anonymous_id, erased_by=by[:128], reason=reason,
                      removed=removed, erased_at=clock())
        session.add(row)
        session.flush()
        # The log line names the account and the anonymous id only, never the contact.
        log.info("erasure %d: account %s of %s %s is now %s (by %s)", row.id,
                 account.id if account is not None else "-", ref.crm, ref.portal,
                 anonymous_id or "-", by[:128])
        return ErasureReport(anonymous_id, removed, row.id)


def _lead_ids(session: Session, account_id: int, ref: AccountRef) -> set[str]:
    """The account's amoCRM leads, from its entries' sources: their webhooks describe it."""
    if ref.crm != "amocrm":
        return set()
    prefix = amo.lead_source(ref.portal, "")
    sources = session.scalars(select(Entry.source).where(
        Entry.account_id == account_id, Entry.source.startswith(prefix, autoescape=True))
        .distinct())
    return {source.removeprefix(prefix).partition(":")[0] for source in sources if source}


def _erase_account(session: Session, account: Account, ref: AccountRef,
                   removed: dict[str, int], now: datetime) -> str:
    anonymous_id = anonymous.new_id()
    new_ref = str(AccountRef(ref.crm, ref.portal, anonymous_id))
    old_code = account.referral_code
    account.contact_id = anonymous_id
    account.birthday = None
    account.card_number = None
    account.referral_code = None
    account.updated_at = now
    welcome = f":welcome:{ref.contact_id}"
    opening = opening_key(ref.crm, ref.portal, ref.contact_id)

    def renamed(name: str) -> str:
        """A key or source that named the contact names the anonymous id instead."""
        if name == opening:  # an imported opening balance
            return opening_key(ref.crm, ref.portal, anonymous_id)
        name = name.replace(str(ref), new_ref)
        if name.endswith(welcome):
            name = name.removesuffix(welcome) + f":welcome:{anonymous_id}"
        return name

    entries = 0
    for entry in session.scalars(select(Entry).where(Entry.account_id == account.id)):
        key = renamed(entry.idempotency_key)
        source = renamed(entry.source) if entry.source else entry.source
        if entry.source_data is not None or entry.request_hash is not None \
                or key != entry.idempotency_key or source != entry.source:
            entries += 1
        entry.source_data = None
        entry.request_hash = None
        entry.idempotency_key = key
        entry.source = source
    removed["entries"] = entries
    removed["card_link"] = session.execute(
        delete(CardLink).where(CardLink.account_id == account.id)).rowcount
    removed["contact_mirror"] = session.execute(
        delete(ContactMirror).where(ContactMirror.account_id == account.id)).rowcount
    removed["triggers_cancelled"] = session.execute(
        update(TriggerEvent).where(TriggerEvent.account_id == account.id,
                                   TriggerEvent.status == "pending")
        .values(status="skipped", last_error=SCRUBBED)).rowcount
    session.execute(update(TriggerEvent).where(TriggerEvent.account_id == account.id,
                                               TriggerEvent.last_error.is_not(None))
                    .values(last_error=SCRUBBED))
    mentions = [ReferralEvent.account_id == account.id, ReferralEvent.referrer_id == account.id]
    if old_code:
        mentions.append(ReferralEvent.code == old_code)
    events = list(session.scalars(select(ReferralEvent).where(or_(*mentions))))
    for event in events:
        if event.referrer_id == account.id or event.code == old_code:
            event.code = None  # the erased customer's own code
        event.detail = None
    removed["referral_events"] = len(events)
    removed["nps_answers"] = session.execute(
        update(NPSAnswer).where(NPSAnswer.account_id == account.id).values(raw=null())).rowcount
    return anonymous_id


def _batches(session: Session, ref: AccountRef) -> Iterator[list[InboxEvent]]:
    query = select(InboxEvent).where(InboxEvent.source == ref.crm,
                                     or_(InboxEvent.portal == ref.portal,
                                         InboxEvent.portal.is_(None)))
    if ref.crm == "bitrix24":
        # Deal events and robot calls carry ids only; contact events name the contact.
        query = query.where(InboxEvent.kind.in_(b24.CONTACT_EVENTS))
    after = 0
    while True:
        rows = list(session.scalars(query.where(InboxEvent.id > after)
                                    .order_by(InboxEvent.id).limit(SCAN_BATCH)))
        if not rows:
            return
        yield rows
        after = rows[-1].id


def _names(crm: str, body: bytes, contact_id: str, leads: set[str]) -> bool:
    """Whether a received body is about the contact (or, for amoCRM, one of its leads)."""
    try:
        form = decode(body)
        if crm == "bitrix24":
            return b24.parse_event(form).entity_id == contact_id
        hook = amo.parse_webhook(form)
    except (QueryError, b24.PayloadError, amo.PayloadError):
        return False
    return contact_id in hook.contact_ids or bool(
        leads.intersection(hook.leads_changed + hook.leads_deleted))


def _scrub_inbox(session: Session, ref: AccountRef, leads: set[str], now: datetime) -> int:
    scrubbed = 0
    for rows in _batches(session, ref):
        for row in rows:
            if not row.body or not _names(ref.crm, row.body, ref.contact_id, leads):
                continue
            scrubbed += 1
            # An amoCRM webhook may carry other customers' changes beside this one's: those
            # stay (and still get applied); only this customer's items go.
            others = _without(row.body, ref.contact_id, leads) if ref.crm == "amocrm" else None
            if others is not None:
                row.body = others
                continue
            row.body = b""
            # One still waiting has nothing left to apply; one being processed right now (the
            # deletion event that asked for this erasure) is finished by its worker.
            if row.status in ("pending", "dead"):
                row.status = "skipped"
                row.processed_at = now  # what inbox retention counts from
                row.last_error = SCRUBBED
            elif row.last_error is not None:
                row.last_error = SCRUBBED
    return scrubbed


ITEM = re.compile(r"^(leads|contacts)\[(\w+)\]\[(\d+)\]")


def _without(body: bytes, contact_id: str, leads: set[str]) -> bytes | None:
    """The webhook's form without the items about the contact or its leads; None when no
    other customer's item is left in it."""
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    ids: dict[str, str] = {}
    for key, value in pairs:
        item = ITEM.match(key)
        if item and key == f"{item.group(0)}[id]":
            ids[item.group(0)] = value
    gone = {item for item, value in ids.items()
            if (item.startswith("contacts") and value == contact_id)
            or (item.startswith("leads") and value in leads)}
    kept = [(key, value) for key, value in pairs
            if not ((item := ITEM.match(key)) and item.group(0) in gone)]
    if not any(ITEM.match(key) for key, _ in kept):
        return None
    return urlencode(kept).encode()
