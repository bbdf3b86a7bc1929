"""Turns stored amoCRM webhooks and digital-pipeline actions into ledger operations.

Webhook bodies are v2-style and may be stale; every lead they name is re-read through API v4
(`with=contacts`, 250 per call) and the ledger is brought to its current state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any

from connector import crm_texts, mirror
from connector.codes import attach as promo_attach
from connector.crm.amocrm import PAGE_LIMIT, AmoCRMClient
from connector.errors import CRMAuthError, CRMError, FatalCRMError, LedgerError
from connector.i18n import translator
from connector.inbox import InboxItem
from connector.ledger.views import AccountRef
from connector.nps import capture as nps_capture
from connector.privacy.erase import erase
from connector.products import rules as products
from connector.referrals.linking import Linker
from connector.services import Services
from connector.triggers import from_results, record
from connector.welcome import welcome as grant_welcome
from connector.worker import Outcome
from mappings import amocrm as amo
from mappings.domain import written_fields
from mappings.phpquery import QueryError, decode

log = logging.getLogger(__name__)
ACTOR = "amocrm"


class AmoCRMProcessor:
    def __init__(self, services: Services, client: AmoCRMClient) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.amocrm
        self.portal = self.settings.portal_key
        self.ledger = services.ledger
        self.linker = Linker(services.db, services.ledger)
        # With product rules, leads are read with their products, and the catalog elements
        # they link to (prices, fields) once per group of webhooks or reconcile page.
        self.with_rows = products.needs_rows(services.settings.program)
        self.elements: dict[tuple[str, str], dict[str, Any]] = {}
        self._promo_notes: dict[int, dict[str, promo_attach.Outcome | str]] = {}
        # Lead notes are read by the account's managers: their language, program.language.
        self.t = translator(services.settings.program.language)

    def ref(self, contact_id: str) -> AccountRef:
        return AccountRef("amocrm", self.portal, contact_id)

    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        hooks: list[tuple[InboxItem, amo.Webhook]] = []
        for item in items:
            try:
                hooks.append((item, amo.parse_webhook(decode(item.body))))
            except (QueryError, amo.PayloadError) as exc:
                outcomes[item.id] = Outcome.skipped(f"unreadable: {exc}")
        try:
            leads = self.fetch_leads(lead_id for _, hook in hooks for lead_id in hook.leads_changed)
            self.load_elements(leads.values())
            # Before any lead is settled: a newcomer's first purchase pays the referral.
            self.link_referrals(hooks, leads)
            # A promo/<code> action attaches its code before the lead is settled.
            self._promo_notes = {
                item.id: self.attach_promo(hook, leads, item.kind.split(":", 2)[2])
                for item, hook in hooks if item.kind.startswith("action:promo:")}
            # Every hook naming a lead sees the same fetched lead: settle each lead once.
            settled: dict[str, str | None] = {}
            for item, hook in hooks:
                outcomes[item.id] = self.apply(item, hook, leads, settled)
        except CRMAuthError as exc:
            for item, _ in hooks:
                outcomes.setdefault(item.id, Outcome("defer", exc.detail))
        except CRMError as exc:
            for item, _ in hooks:
                outcomes.setdefault(item.id, Outcome.retry(exc.detail))
        return outcomes

    def fetch_leads(self, wanted: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Leads by id (None: gone). One filtered call per 250; any lead the filter did not
        return (the filter is a paid add-on on some accounts) is read on its own."""
        ids = list(dict.fromkeys(wanted))
        found: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(ids), PAGE_LIMIT):
            chunk = ids[start:start + PAGE_LIMIT]
            body = self.client.request("GET", "/api/v4/leads", params={
                "filter[id][]": chunk, "with": self.lead_with, "limit": PAGE_LIMIT})
            for lead in ((body or {}).get("_embedded") or {}).get("leads") or []:
                if str(lead.get("id")) in chunk:
                    found[str(lead["id"])] = lead
        for lead_id in (i for i in ids if i not in found):
            found[lead_id] = self.client.request("GET", f"/api/v4/leads/{lead_id}",
                                                 params={"with": self.lead_with})
        return found

    @property
    def lead_with(self) -> str:
        return "contacts,catalog_elements" if self.with_rows else "contacts"

    def load_elements(self, leads: Iterable[dict[str, Any] | None]) -> None:
        """The catalog elements the leads' products link to, one filtered call per catalog
        and 250 elements; an element gone from its list stays unknown (its row is left
        out: no price)."""
        self.elements = {}  # read afresh for each group: prices change
        if not self.with_rows:
            return
        wanted: dict[str, list[str]] = {}
        for lead in leads:
            for catalog, element in (amo.linked_elements(lead) or []) if lead else []:
                if element not in wanted.setdefault(catalog, []):
                    wanted[catalog].append(element)
        for catalog, ids in wanted.items():
            for start in range(0, len(ids), PAGE_LIMIT):
                chunk = ids[start:start + PAGE_LIMIT]
                body = self.client.request("GET", f"/api/v4/catalogs/{catalog}/elements",
                                           params={"filter[id][]": chunk, "limit": PAGE_LIMIT})
                for element in ((body or {}).get("_embedded") or {}).get("elements") or []:
                    if str(element.get("id")) in chunk:
                        self.elements[(catalog, str(element["id"]))] = element

    def link_referrals(self, items: list[tuple[InboxItem, amo.Webhook]],
                       leads: dict[str, dict[str, Any] | None]) -> None:
        """Link every contact whose `referred_by` field holds a code: those the webhooks
        carry, and the main contacts of won leads still waiting for their first purchase
        with no referrer, read through API v4: a webhook of theirs may have been lost, and
        a v2 webhook may name a field by id alone."""
        for item, hook in items:
            if item.kind.startswith("action:referral:"):
                self.refer_leads(hook, leads, item.kind.split(":", 2)[2])
        hooks = [hook for _, hook in items]
        code = self.settings.fields.get("referred_by")
        if not code:
            return
        contacts = {str(c["id"]): c for hook in hooks
                    for c in [*hook.contacts_added, *hook.contacts_updated]}
        buyers = {state.contact_id for lead in leads.values() if lead is not None
                  for state in [amo.purchase_state(lead, portal=self.portal,
                                                   pipelines=self.settings.pipelines)]
                  if state.amount is not None and state.contact_id}
        waiting = self.linker.awaiting_link(
            [self.ref(c) for c in buyers if amo.referred_by(contacts.get(c, {}), code) is None])
        contacts.update(self.fetch_contacts(ref.contact_id for ref in waiting))
        for contact_id, contact in contacts.items():
            self.linker.link(self.ref(contact_id), amo.referred_by(contact, code),
                             via="amocrm:contact")

    def refer_leads(self, hook: amo.Webhook, leads: dict[str, dict[str, Any] | None],
                    code: str) -> dict[str, str]:
        """The referral/<code> action: each lead's main contact came with `code`. Returns
        the note for each lead."""
        notes = {}
        for lead_id in hook.leads_changed:
            lead = leads.get(lead_id)
            contact = amo.main_contact(lead) if lead else None
            if contact is None:
                notes[lead_id] = self.t._("Loyalty: the lead has no contact")
                continue
            link = self.linker.link(self.ref(contact), code, via="amocrm:action")
            notes[lead_id] = self.t._(
                "Loyalty: referral code %(code)s: %(outcome)s", code=code,
                outcome=link.detail if link is not None and link.skipped else self.t._("linked"))
        return notes

    def attach_promo(self, hook: amo.Webhook, leads: dict[str, dict[str, Any] | None],
                     code: str) -> dict[str, promo_attach.Outcome | str]:
        """The promo/<code> action: the code goes with each lead's purchase, used when the
        lead is won and accrued. Returns what the check found (or why not) per lead."""
        found: dict[str, promo_attach.Outcome | str] = {}
        for lead_id in hook.leads_changed:
            lead = leads.get(lead_id)
            contact = amo.main_contact(lead) if lead else None
            if lead is None or contact is None:
                found[lead_id] = self.t._("Loyalty: the lead has no contact")
                continue
            price = Decimal(str(lead.get("price") or 0))
            found[lead_id] = promo_attach.attach(
                self.services.db, self.ledger, amo.lead_source(self.portal, lead_id), code,
                ref=self.ref(contact), amount=price, via="amocrm:action")
        return found

    def _promo_note(self, lead_id: str, checked: promo_attach.Outcome | str) -> str:
        if isinstance(checked, str):
            return checked
        used = promo_attach.used_by(self.services.db, amo.lead_source(self.portal, lead_id))
        t = self.t
        if used is not None and used.code == checked.code:
            return crm_texts.reason(used.message(t), t)
        if checked.refused:
            return crm_texts.reason(checked.message(t), t)
        return crm_texts.promo_pending(checked.code, checked.campaign, t, lead=True)

    def fetch_contacts(self, wanted: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Contacts by id through API v4 (`custom_fields_values`), as fetch_leads reads
        leads: one filtered call per 250, then one by one what the filter did not return."""
        ids = list(dict.fromkeys(wanted))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), PAGE_LIMIT):
            chunk = ids[start:start + PAGE_LIMIT]
            body = self.client.request("GET", "/api/v4/contacts", params={
                "filter[id][]": chunk, "limit": PAGE_LIMIT})
            for contact in ((body or {}).get("_embedded") or {}).get("contacts") or []:
                if str(contact.get("id")) in chunk:
                    found[str(contact["id"])] = contact
        for contact_id in (i for i in ids if i not in found):
            contact = self.client.request("GET", f"/api/v4/contacts/{contact_id}")
            if contact:
                found[contact_id] = contact
        return found

    def apply(self, item: InboxItem, hook: amo.Webhook,
              leads: dict[str, dict[str, Any] | None],
              settled: dict[str, str | None]) -> Outcome:
        skipped = []
        for lead_id in hook.leads_deleted:
            self.ledger.settle_purchase(None, amo.lead_source(self.portal, lead_id), None,
                                        actor=ACTOR, comment="lead deleted")
        for lead_id in hook.leads_changed:
            if lead_id not in settled:
                settled[lead_id] = self.settle(lead_id, leads.get(lead_id))[1]
            if reason := settled[lead_id]:
                skipped.append(reason)
        for contact in hook.contacts_added:
            self.welcome(contact)
        for contact in hook.contacts_updated:
            self.contact_changed(contact)
        if self.services.settings.privacy.erase_on_contact_delete:
            for contact_id in hook.contacts_deleted:
                erase(self.services.db, self.ref(contact_id), reason="contact deleted in amoCRM",
                      by="amocrm:delete_contact", clock=self.ledger.clock)
        if item.kind.startswith("action:"):
            return self.action(item, hook, leads)
        if skipped and not hook.contacts_added and not hook.contacts_updated and \
                len(skipped) == len(hook.leads_changed):
            return Outcome.skipped("; ".join(skipped))
        return Outcome.done()

    def settle(self, lead_id: str, lead: dict[str, Any] | None, *,
               notify: bool = True) -> tuple[int, str | None]:
        """Bring the ledger to the lead's state: (entries written, why it holds no
        purchase when it has no contact). `notify` False: no marketing triggers."""
        source = amo.lead_source(self.portal, lead_id)
        if lead is None:
            gone = self.ledger.settle_purchase(None, source, None, actor=ACTOR,
                                               comment="lead gone")
            return len(gone), None
        rows = amo.lead_rows(lead, self.elements) if self.with_rows else None
        state = amo.purchase_state(lead, portal=self.portal, pipelines=self.settings.pipelines,
                                   rows=rows)
        ref = self.ref(state.contact_id) if state.contact_id else None
        field = self.settings.promo_code_field
        results = self.ledger.settle_purchase(
            ref, source, state.amount, category=state.category, occurred_at=state.occurred_at,
            source_data=state.raw, actor=ACTOR, comment=f"lead {lead_id}", rows=state.rows,
            promo_code=amo.promo_code(lead, field) if field else None)
        mirror.deal_settled(self.services.db, ref, lead_id,
                            from_results(results, deal_id=lead_id) if notify else [],
                            program=self.services.program)
        # A pipeline left out of the program is left out of NPS too: its leads earn nothing.
        if self.settings.nps_field and amo.in_pipelines(lead, self.settings.pipelines):
            value = amo.nps_score(lead, self.settings.nps_field)
            # The lead's figures and the answer, as a purchase keeps them: not its name or
            # other fields, which may name the customer.
            nps_capture.from_field(self.services, ref, value, source="amocrm:field",
                                   entity=source, actor=ACTOR,
                                   raw={**state.raw, self.settings.nps_field: value})
        return len(results), None if state.contact_id else f"lead {lead_id}: {state.reason}"

    def welcome(self, contact: dict[str, Any]) -> None:
        contact_id = str(contact["id"])
        ref = self.ref(contact_id)
        birthday = self.birthday(contact)
        self.ledger.open_account(ref, **({"birthday": birthday} if birthday else {}))
        grant_welcome(self.services, ref, channel="crm", actor=ACTOR,
                      key=f"amocrm:{self.portal}:welcome:{contact_id}")

    def birthday(self, contact: dict[str, Any]) -> date | None:
        return amo.birthday(contact, self.settings.birthday_field_id, self.services.program.zone)

    def contact_changed(self, contact: dict[str, Any]) -> None:
        account_id = self.ledger.account_id(self.ref(str(contact["id"])))
        if account_id is None:
            return
        if (birthday := self.birthday(contact)) is not None:
            self.ledger.open_account(self.ref(str(contact["id"])), birthday=birthday)
        shown = amo.webhook_field_values(contact, {})
        # A webhook lists only fields that hold a value: compare those it shows.
        codes = [code for code in written_fields(self.settings.fields) if code in shown]
        mirror.note_crm_values(self.services.db, account_id, shown, codes, amo.changed_values)

    def action(self, item: InboxItem, hook: amo.Webhook,
               leads: dict[str, dict[str, Any] | None]) -> Outcome:
        """A digital-pipeline stage action: /amocrm/actions/<secret>/bonus/<name>,
        /redeem/<points|max>, /reward/<reward id> or /nps/<0-10>. It waits for no answer,
        so the outcome goes into a lead note."""
        _, verb, argument = item.kind.split(":", 2)
        if verb == "promo":
            # Attached before the group's leads were settled; this writes what came of it.
            self._notes(item, [(lead_id, self._promo_note(lead_id, checked))
                               for lead_id, checked in self._promo_notes.get(item.id, {}).items()])
            return Outcome.done()
        if verb == "referral":
            # Linked before the group's leads were settled; this writes what came of it.
            self._notes(item, list(self.refer_leads(hook, leads, argument).items()))
            return Outcome.done()
        notes = []
        t = self.t
        for lead_id in hook.leads_changed:
            lead = leads.get(lead_id)
            contact = amo.main_contact(lead) if lead else None
            if contact is None:
                notes.append((lead_id, self.t._("Loyalty: the lead has no contact")))
                continue
            key = f"amocrm:{self.portal}:action:{item.id}:{lead_id}"
            try:
                if verb == "bonus":
                    result = self.ledger.grant_bonus(self.ref(contact), argument, key=key,
                                                     actor="amocrm-pipeline")
                    record(self.services.db, from_results([result], deal_id=lead_id),
                           program=self.services.program)
                    text = t._("Loyalty: bonus %(name)s %(points)s, balance %(balance)s",
                               name=argument, points=t.ledger_points(result.points, signed=True),
                               balance=t.figure(result.balance))
                elif verb == "nps":
                    answered = self.services.nps.record(
                        self.ref(contact), argument, source="amocrm:action", source_key=key,
                        raw={"action": f"nps/{argument}", "lead_id": lead_id},
                        actor="amocrm-pipeline")
                    text = crm_texts.nps(answered.score, answered.bonus_points
                                         if answered.bonus_entry_id else None, t)
                elif verb == "reward":
                    claimed = self.services.claims.claim(self.ref(contact), argument, key=key,
                                                         via="amocrm:action",
                                                         actor="amocrm-pipeline")
                    text = crm_texts.reward_claimed(
                        claimed.claim.reward_name, claimed.claim.code, -claimed.result.points,
                        claimed.result.balance, t)
                else:
                    price = Decimal(str((lead or {}).get("price") or 0))
                    wanted = Decimal("1e12") if argument == "max" else Decimal(argument)
                    result = self.ledger.redeem(
                        self.ref(contact), wanted, key=key, partial=True,
                        purchase_amount=price if price > 0 else None, actor="amocrm-pipeline",
                        rows=amo.lead_rows(lead, self.elements) if lead and self.with_rows
                        else None,
                        source=f"{amo.lead_source(self.portal, lead_id)}:redeem")
                    text = crm_texts.redeemed(-result.points, result.balance, t)
            except (LedgerError, ArithmeticError, ValueError) as exc:
                text = crm_texts.reason(getattr(exc, "detail", exc), t)
            notes.append((lead_id, text))
        self._notes(item, notes)
        return Outcome.done()

    def _notes(self, item: InboxItem, notes: list[tuple[str, str]]) -> None:
        if not notes:
            return
        try:
            self.client.request("POST", "/api/v4/leads/notes", json=[
                {"entity_id": int(lead_id), "note_type": "common", "params": {"text": text}}
                for lead_id, text in notes])
        except FatalCRMError as exc:
            # The ledger part is done; the note may have been written (a timeout) or was
            # refused. Retrying the item would post it again, so it ends here.
            log.warning("lead notes of inbox item %d not written: %s", item.id, exc.detail)
