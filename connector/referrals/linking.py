"""Link a newcomer to the customer whose referral code they came with.

Codes arrive from a CRM contact field, the JSON API or a robot. Whatever the code, a purchase
is never blocked by it: a code that is malformed, names nobody, names the newcomer, would
close a cycle, or comes after the newcomer's first purchase is recorded in referral_events
with the reason and otherwise ignored. A link is made once; the referral bonuses follow the
newcomer's first completed purchase (the ledger pays them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from connector.db import Database
from connector.errors import ReferralRefusedError
from connector.ledger.engine import Ledger
from connector.ledger.models import Account
from connector.ledger.views import AccountRef
from connector.referrals import codes
from connector.referrals.models import ReferralEvent

log = logging.getLogger(__name__)
CODE_KEPT = 32  # characters of a rejected code kept in the record


@dataclass(frozen=True)
class Link:
    """What became of a code: `outcome` "linked" (now), "already" (to this referrer
    before) or a reason it was skipped (see referrals.models.OUTCOMES)."""

    outcome: str
    code: str
    detail: str = ""

    @property
    def skipped(self) -> bool:
        return self.outcome not in ("linked", "already")

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "code": self.code, "detail": self.detail}


class Linker:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    def link(self, ref: AccountRef, raw: str | None, *, via: str) -> Link | None:
        """Link `ref` to the owner of code `raw`; None when no code was given."""
        if raw is None or not str(raw).strip():
            return None
        code = codes.normalize(raw)
        if code is None:
            return self._skip(ref, str(raw).strip(), "invalid",
                              "not a referral code (8 letters and digits)", via)
        referrer = self.ledger.referrer_by_code(code)
        if referrer is None:
            return self._skip(ref, code, "unknown", "no customer has this referral code", via)
        try:
            linked = self.ledger.link_referral(ref, referrer, via=via)
        except ReferralRefusedError as exc:
            return self._skip(ref, code, exc.reason, exc.detail, via)
        if linked:
            log.info("referral: %s linked to %s by code %s (%s)", ref, referrer, code, via)
        return Link("linked" if linked else "already", code)

    def awaiting_link(self, refs: list[AccountRef], *, unseen_only: bool = False
                      ) -> list[AccountRef]:
        """Those of `refs` a code could still link: no account yet, or (unless
        `unseen_only`) one with no purchase and no referrer. Their contact is worth reading
        before their purchase is settled. Nothing, when the program pays no referral bonus:
        then the contact's own events still link it, but no extra CRM call is spent."""
        settings = self.ledger.program.settings
        if not refs or not (settings.referral_bonus or settings.referral_newcomer_bonus):
            return []
        known: set[AccountRef] = set()
        with self.db.transaction(write=False) as session:
            for crm, portal in {(ref.crm, ref.portal) for ref in refs}:
                ids = [ref.contact_id for ref in refs if (ref.crm, ref.portal) == (crm, portal)]
                query = select(Account.contact_id).where(
                    Account.crm == crm, Account.portal == portal, Account.contact_id.in_(ids))
                if not unseen_only:
                    query = query.where(or_(Account.referred_by_id.is_not(None),
                                            Account.purchase_count > 0,
                                            Account.first_purchase_at.is_not(None)))
                known |= {AccountRef(crm, portal, contact_id)
                          for contact_id in session.scalars(query)}
        return [ref for ref in dict.fromkeys(refs) if ref not in known]

    def check(self, ref: AccountRef | None, raw: str) -> Link:
        """What link() would do with `raw` for `ref`, as far as a read can tell; writes
        nothing (a purchase preview)."""
        code = codes.normalize(raw)
        if code is None:
            return Link("invalid", raw.strip()[:CODE_KEPT],
                        "not a referral code (8 letters and digits)")
        referrer = self.ledger.referrer_by_code(code)
        if referrer is None:
            return Link("unknown", code, "no customer has this referral code")
        if ref is None:
            return Link("valid", code)
        if referrer == ref:
            return Link("self", code, "a customer cannot refer themselves")
        account_id = self.ledger.account_id(ref)
        if account_id is None:
            return Link("valid", code)
        view = self.ledger.account(ref)
        if view.referred_by == code:
            return Link("already", code)
        if view.referred_by is not None:
            return Link("taken", code, "already referred by another customer")
        if view.purchase_count or view.first_purchase_at:
            return Link("purchased", code, "has already made a purchase")
        return Link("valid", code)

    def _skip(self, ref: AccountRef, code: str, outcome: str, detail: str, via: str) -> Link:
        """Record a skipped code once per newcomer and code (contact updates repeat it)."""
        code = code[:CODE_KEPT]
        account_id = self.ledger.open_account(ref)
        with self.db.transaction() as session:
            seen = session.scalar(select(ReferralEvent.id).where(
                ReferralEvent.account_id == account_id, ReferralEvent.code == code,
                ReferralEvent.outcome == outcome).limit(1))
            if seen is None:
                session.add(ReferralEvent(account_id=account_id, code=code, outcome=outcome,
                                          detail=detail, via=via,
                                          created_at=self.ledger.clock()))
                log.info("referral code %r for %s skipped: %s", code, ref, detail)
        return Link(outcome, code, detail)
