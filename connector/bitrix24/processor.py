"""Turns stored Bitrix24 events and robot calls into ledger operations.

Events carry only an id, so one `batch` call per 50 items fetches the deals and contacts a
group needs; the ledger is then brought to each deal's current state (settle_purchase), which
makes duplicate and out-of-order events harmless.
"""

from __future__ import annotations

import logging

from connector import mirror
from connector.bitrix24 import actions
from connector.bitrix24.fetch import Fetched, fetch
from connector.bitrix24.portal import same_portal
from connector.bitrix24.robots import RobotRunner
from connector.crm.bitrix24 import Bitrix24Client, tokens_from
from connector.errors import CRMAuthError, CRMError, RetriableCRMError
from connector.inbox import InboxItem
from connector.ledger.views import AccountRef
from connector.nps import capture as nps_capture
from connector.privacy.erase import erase
from connector.products import rules as products
from connector.referrals.linking import Linker
from connector.services import Services
from connector.triggers import from_results
from connector.welcome import welcome as grant_welcome
from connector.worker import Outcome
from mappings import bitrix24 as b24
from mappings.domain import written_fields
from mappings.phpquery import QueryError, decode

log = logging.getLogger(__name__)
ACTOR = "bitrix24"


class Bitrix24Processor:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.bitrix24
        self.portal = self.settings.portal_key
        self.ledger = services.ledger
        self.robots = RobotRunner(services, client)
        self.rules = actions.ActionRunner(services, client)  # the "Webhook" automation rule
        self.linker = Linker(services.db, services.ledger)

    def ref(self, contact_id: str) -> AccountRef:
        return AccountRef("bitrix24", self.portal, contact_id)

    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        events: list[tuple[InboxItem, b24.Event]] = []
        robots: list[tuple[InboxItem, b24.RobotCall]] = []
        rules: list[tuple[InboxItem, actions.Action]] = []
        for item in items:
            try:
                if item.kind.startswith(actions.KIND):
                    rules.append((item, actions.parse(item)))
                    continue
                form = decode(item.body)
                if item.kind.startswith("robot:"):
                    robots.append((item, b24.parse_robot(form)))
                else:
                    events.append((item, b24.parse_event(form)))
            except (QueryError, b24.PayloadError) as exc:
                outcomes[item.id] = Outcome.skipped(f"unreadable: {exc}")
        # Installation first: the rest of the group may need its tokens.
        for item, event in events:
            if event.name in b24.APP_EVENTS:
                outcomes[item.id] = self.app_event(event)
        pending = [(item, event) for item, event in events if event.name not in b24.APP_EVENTS]
        try:
            fetched = self._fetch(pending, robots, [rule.deal_id for _, rule in rules])
            # Before any purchase is settled: a newcomer's first purchase pays the referral.
            self._link_referrals(fetched)
            self.robots.refer_first(robots, fetched)
            self.robots.promo_first(robots, fetched)
            self.rules.promo_first(rules, fetched)
            # Every event of one deal in this group sees the same fetched state: settle it
            # once (edits come in bursts; each settle is several transactions).
            settled: dict[tuple[str, bool], Outcome] = {}
            for item, event in pending:
                if event.name not in b24.DEAL_EVENTS:
                    outcomes[item.id] = self.event(event, fetched)
                    continue
                deal = (event.entity_id or "", event.name == "ONCRMDEALDELETE")
                if deal not in settled:
                    settled[deal] = self.event(event, fetched)
                outcomes[item.id] = settled[deal]
            outcomes.update(self.robots.run(robots, fetched))
            outcomes.update(self.rules.run(rules, fetched))
        except CRMAuthError as exc:
            for item in [i for i, _ in pending] + [i for i, _ in robots] + [i for i, _ in rules]:
                outcomes.setdefault(item.id, Outcome("defer", exc.detail))
        except CRMError as exc:
            for item in [i for i, _ in pending] + [i for i, _ in robots] + [i for i, _ in rules]:
                outcomes.setdefault(item.id, Outcome.retry(exc.detail))
        return outcomes

    def _fetch(self, events: list[tuple[InboxItem, b24.Event]],
               robots: list[tuple[InboxItem, b24.RobotCall]], deals: list[str]) -> Fetched:
        wanted: list[tuple[str, str]] = []
        for _, event in events:
            if event.entity_id and event.name in ("ONCRMDEALADD", "ONCRMDEALUPDATE"):
                wanted.append(("deal", event.entity_id))
            elif event.entity_id and event.name in ("ONCRMCONTACTADD", "ONCRMCONTACTUPDATE"):
                wanted.append(("contact", event.entity_id))
        wanted += [("deal", call.deal_id) for _, call in robots if call.deal_id]
        wanted += [("deal", deal_id) for deal_id in deals]
        program = self.services.settings.program
        return fetch(self.client, wanted, rows=products.needs_rows(program),
                     catalog=products.needs_catalog(program)) if wanted else Fetched()

    def _link_referrals(self, fetched: Fetched) -> None:
        """Link every contact of the group whose `referred_by` field holds a code. The
        contacts of won deals never seen before (their events lost) are read too, one more
        batch call, so their first purchase finds the link."""
        field = self.settings.fields.get("referred_by")
        if not field:
            return
        buyers = []
        for (kind, _), deal in fetched.found.items():
            state = b24.purchase_state(deal, portal=self.portal,
                                       categories=self.settings.deal_categories) \
                if kind == "deal" else None
            if state is not None and state.amount is not None and state.contact_id and \
                    ("contact", state.contact_id) not in fetched.found:
                buyers.append(self.ref(state.contact_id))
        # Every contact event reads the whole contact: only one never seen needs reading.
        unseen = [("contact", ref.contact_id)
                  for ref in self.linker.awaiting_link(buyers, unseen_only=True)]
        if unseen:
            more = fetch(self.client, unseen)
            if more.failed:
                # Settling without the contact could pay a first purchase with no referral.
                raise RetriableCRMError("; ".join(more.failed.values()))
            fetched.found.update(more.found)
        for (kind, contact_id), contact in list(fetched.found.items()):
            if kind == "contact":
                self.linker.link(self.ref(contact_id), b24.referred_by(contact, field),
                                 via="bitrix24:contact")

    def event(self, event: b24.Event, fetched: Fetched) -> Outcome:
        if event.name in b24.DEAL_EVENTS:
            return self.deal_event(event, fetched)
        return self.contact_event(event, fetched)

    def deal_event(self, event: b24.Event, fetched: Fetched) -> Outcome:
        deal_id = event.entity_id or ""
        source = b24.deal_source(self.portal, deal_id)
        key = ("deal", deal_id)
        if event.name == "ONCRMDEALDELETE" or key in fetched.missing:
            self.ledger.settle_purchase(None, source, None, actor=ACTOR, comment="deal deleted")
            return Outcome.done()
        if key in fetched.failed:
            return Outcome.retry(fetched.failed[key])
        state = b24.purchase_state(fetched.found[key], portal=self.portal,
                                   categories=self.settings.deal_categories,
                                   rows=fetched.product_rows(deal_id))
        ref = self.ref(state.contact_id) if state.contact_id else None
        field = self.settings.promo_code_field
        code = fetched.found[key].get(field) if field else None
        results = self.ledger.settle_purchase(
            ref, state.source, state.amount, category=state.category,
            occurred_at=state.occurred_at, source_data=state.raw, actor=ACTOR,
            comment=f"deal {deal_id}", rows=state.rows,
            promo_code=str(code) if code else None)
        mirror.deal_settled(self.services.db, ref, deal_id,
                            from_results(results, deal_id=deal_id),
                            program=self.services.program)
        categories = self.settings.deal_categories
        # A funnel left out of the program is left out of NPS too: its deals earn nothing.
        if self.settings.nps_field and (not categories or state.category in categories):
            value = fetched.found[key].get(self.settings.nps_field)
            # The deal's figures and the answer, as a purchase keeps them: not its title,
            # comments or other fields, which may name the customer.
            nps_capture.from_field(self.services, ref, value, source="bitrix24:field",
                                   entity=source, actor=ACTOR,
                                   raw={**state.raw, self.settings.nps_field: value})
        if state.amount is None and state.contact_id is None:
            return Outcome.skipped(f"deal {deal_id}: {state.reason}")
        return Outcome.done()

    def contact_event(self, event: b24.Event, fetched: Fetched) -> Outcome:
        contact_id = event.entity_id or ""
        key = ("contact", contact_id)
        if event.name == "ONCRMCONTACTDELETE":
            if not self.services.settings.privacy.erase_on_contact_delete:
                return Outcome.skipped("contact deleted in the CRM; its ledger is kept")
            erase(self.services.db, self.ref(contact_id), reason="contact deleted in Bitrix24",
                  by="bitrix24:ONCRMCONTACTDELETE", clock=self.ledger.clock)
            return Outcome.done()
        if key in fetched.missing:
            return Outcome.skipped(f"contact {contact_id} no longer exists")
        if key in fetched.failed:
            return Outcome.retry(fetched.failed[key])
        contact = fetched.found[key]
        ref = self.ref(contact_id)
        birthday = b24.birthday(contact)
        if event.name == "ONCRMCONTACTADD":
            self.ledger.open_account(ref, birthday=birthday)
            grant_welcome(self.services, ref, channel="crm", actor=ACTOR,
                          key=f"bitrix24:{self.portal}:welcome:{contact_id}")
            return Outcome.done()
        account_id = self.ledger.account_id(ref)
        if account_id is None:
            return Outcome.skipped(f"contact {contact_id} has no loyalty account yet")
        self.ledger.open_account(ref, birthday=birthday)
        mirror.note_crm_values(self.services.db, account_id, contact,
                               written_fields(self.settings.fields), b24.changed_values)
        return Outcome.done()

    def app_event(self, event: b24.Event) -> Outcome:
        # The receiver checked auth[domain]; checked again for events stored before it did.
        if not same_portal(event.auth.domain, self.portal):
            return Outcome.skipped(f"{event.name} from {event.auth.domain[:255]!r}, not the "
                                   f"configured portal {self.portal}: ignored")
        if event.name == "ONAPPUNINSTALL":
            self.services.bitrix24_credentials.revoke(
                "the application was uninstalled from the portal")
            return Outcome.done()
        return self.install(event.auth)

    def install(self, auth: b24.Auth) -> Outcome:
        """Keep an install's tokens once the configured portal confirms its access token is
        this app's and an administrator's (Bitrix24Client.confirm).

        The confirmation goes to the configured portal, never to the install's
        client_endpoint: a forged install's token is unknown there, or an employee's, and
        nothing is kept.
        """
        if not auth.access_token:
            return Outcome.skipped("ONAPPINSTALL without tokens")
        try:
            self.client.confirm(auth.access_token)
        except RetriableCRMError as exc:
            return Outcome.retry(exc.detail)
        except CRMError as exc:
            log.warning("bitrix24 install refused: %s does not confirm its token (%s)",
                        self.portal, exc.code)
            return Outcome.skipped(f"ONAPPINSTALL refused: {self.portal} does not confirm "
                                   f"its access token as this app's and an administrator's "
                                   f"({exc.code}: {exc.detail}); nothing stored")
        self.services.bitrix24_credentials.save(tokens_from({
            "access_token": auth.access_token, "refresh_token": auth.refresh_token,
            "expires_in": auth.expires_in, "member_id": auth.member_id,
            "application_token": auth.application_token}, endpoint=self.settings.rest_url))
        log.info("bitrix24 app installed on %s", self.portal)
        return Outcome.done()
