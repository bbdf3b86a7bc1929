"""The "Loyalty" tab in Bitrix24 contact and deal cards (widget placements).

Bitrix24 opens the tab by POSTing a placement call to our handler (api-reference/widgets/
crm/detail-tab.md). Nothing in it is taken on trust but AUTH_ID, the calling user's access
token: DOMAIN and member_id must name the configured portal (so a token of another portal is
never sent anywhere), then the token goes to that portal's `profile` (settings.rest_url,
never a domain the request names) and the portal's answer alone says who the user is and
whether they are an admin. The card is read with the same token, so the tab shows only
contacts and deals the user may open in the CRM. Portal admins and `bitrix24.tab_editors`
may grant bonus points and redeem; every change is a ledger entry whose actor is
`bitrix24:user:<id>`, keyed by the signed form's nonce (tab_forms).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from connector.bitrix24.portal import same_portal
from connector.bitrix24.tab_forms import FormGrant, FormTokens, TabRefused
from connector.crm.bitrix24 import Bitrix24Client
from connector.errors import AccountNotFoundError, CRMAuthError, CRMError, FatalCRMError
from connector.i18n import translator
from connector.ledger.fingerprint import request_fingerprint
from connector.ledger.views import AccountRef, AccountView, EntryView, Result
from connector.rewards.claims import Claimed
from connector.services import Services
from mappings.domain import entity_id

__all__ = ["PLACEMENTS", "TAB_PATH", "Bitrix24Tab", "Customer", "Manager", "PlacementCall",
           "TabPage", "TabRefused", "parse_call"]

PLACEMENTS = {"CRM_CONTACT_DETAIL_TAB": "contact", "CRM_DEAL_DETAIL_TAB": "deal"}
TAB_PATH = "/bitrix24/tab"
TITLES = {"en": "Loyalty", "ru": "Лояльность", "de": "Treueprogramm"}
HISTORY_LIMIT = 20
BONUS_NAME = "manager"  # entries' details.bonus for points a manager grants from the tab
TEXT_MAX = 255


@dataclass(frozen=True)
class PlacementCall:
    """The fields of a placement call the tab uses (widgets/_includes/widget_data.md)."""

    placement: str
    entity: str  # "contact" | "deal"
    entity_id: str
    auth_id: str
    domain: str
    member_id: str
    application_token: str | None
    lang: str


def _field(values: Mapping[str, str], name: str, *, required: bool = True) -> str:
    value = (values.get(name) or "").strip()
    if required and not value:
        raise TabRefused(400, "invalid_placement_call", f"{name} is missing")
    if len(value) > TEXT_MAX or "\x00" in value:
        raise TabRefused(400, "invalid_placement_call", f"{name}: at most {TEXT_MAX} "
                                                        "characters and no NUL")
    return value


def parse_call(values: Mapping[str, str]) -> PlacementCall:
    """A placement call from its query string and form fields; TabRefused 400 when it is
    not one of the tab's."""
    placement = _field(values, "PLACEMENT")
    if placement not in PLACEMENTS:
        raise TabRefused(400, "unsupported_placement",
                         f"PLACEMENT must be one of {', '.join(PLACEMENTS)}")
    try:
        options = json.loads(values.get("PLACEMENT_OPTIONS") or "")
    except ValueError:
        options = None
    found = entity_id(options.get("ID")) if isinstance(options, dict) else None
    if found is None:
        raise TabRefused(400, "invalid_placement_call",
                         'PLACEMENT_OPTIONS must be JSON with the card\'s "ID"')
    return PlacementCall(placement, PLACEMENTS[placement], found,
                         _field(values, "AUTH_ID"), _field(values, "DOMAIN"),
                         _field(values, "member_id"),
                         _field(values, "APPLICATION_TOKEN", required=False) or None,
                         _field(values, "LANG", required=False) or "en")


@dataclass(frozen=True)
class Manager:
    user_id: int
    name: str
    admin: bool
    editor: bool

    @property
    def actor(self) -> str:
        return f"bitrix24:user:{self.user_id}"


@dataclass(frozen=True)
class Customer:
    """Whose account the tab shows: a contact, or a deal's contact (None: the deal has
    none). `label` is what the page calls them."""

    contact_id: str | None
    label: str


@dataclass(frozen=True)
class TabPage:
    manager: Manager
    customer: Customer
    account: AccountView | None
    history: list[EntryView]
    forms: dict[str, str] = field(default_factory=dict)  # operation -> token (editors)
    # Rewards on offer now (id, name, cost), for the editors' claim form.
    rewards: list[tuple[str, str, Decimal]] = field(default_factory=list)


def _name(record: Mapping[str, Any], fallback: str) -> str:
    parts = [str(record.get(key) or "").strip() for key in ("NAME", "LAST_NAME")]
    return " ".join(part for part in parts if part)[:TEXT_MAX] or fallback


class Bitrix24Tab:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.settings = services.settings.bitrix24
        self.ledger = services.ledger
        self.services = services
        self.credentials = services.bitrix24_credentials
        self.client = client
        # A manager reads the labels made here (a deal without a title, a nameless contact).
        self.t = translator(services.settings.program.language)
        secret = self.settings.client_secret
        if not self.settings.client_id or secret is None:
            raise TabRefused(404, "tab_unavailable", "the CRM tab needs the Bitrix24 app "
                                                     "setup (bitrix24.client_id, client_secret)")
        self.forms = FormTokens(secret.get_secret_value(), services.ledger.clock)

    # -- opening the tab -------------------------------------------------------------------
    def open(self, call: PlacementCall) -> TabPage:
        self._check_portal(call)
        manager = self._manager(call.auth_id)
        return self.page(manager, self._customer(call))

    def _check_portal(self, call: PlacementCall) -> None:
        if not same_portal(call.domain, self.settings.portal_key):
            raise TabRefused(401, "unauthorized", "DOMAIN is not the configured portal")
        try:
            stored = self.credentials.load()
        except CRMAuthError as exc:  # revoked (uninstalled), or sealed with another key
            raise TabRefused(503, "app_credentials_unusable",
                             f"the app's stored credentials cannot be used ({exc.code}): "
                             "see loyalty-connector doctor") from None
        member = self.settings.member_id or (stored.member_id if stored else None)
        if member and not _same(call.member_id, member):
            raise TabRefused(401, "unauthorized", "member_id is not this portal's")
        token = self.settings.application_token.get_secret_value() \
            if self.settings.application_token else (stored.application_token if stored
                                                     else None)
        if token and call.application_token is not None \
                and not _same(call.application_token, token):
            raise TabRefused(401, "unauthorized", "APPLICATION_TOKEN is not this app's")

    def _as_user(self, method: str, auth_id: str, params: dict[str, Any] | None = None,
                 what: str = "") -> Any:
        try:
            return self.client.call_as_user(method, auth_id, params)
        except CRMAuthError as exc:
            raise TabRefused(401, "unauthorized", f"the portal does not accept AUTH_ID "
                                                  f"({exc.code or 'refused'})") from None
        except FatalCRMError as exc:
            raise TabRefused(404, "not_found", f"{what or method}: the portal answered: "
                                               f"{exc.detail}") from None
        except CRMError as exc:
            raise TabRefused(503, "portal_unavailable",
                             f"the portal did not answer {method}: {exc.code}") from None

    def _manager(self, auth_id: str) -> Manager:
        profile = self._as_user("profile", auth_id)
        found = entity_id(profile.get("ID")) if isinstance(profile, dict) else None
        if found is None:
            raise TabRefused(401, "unauthorized", "the portal named no user for AUTH_ID")
        user, admin = int(found), profile.get("ADMIN") is True
        return Manager(user, _name(profile, self.t._("user %(id)s", id=user)), admin,
                       admin or user in self.settings.tab_editors)

    def _customer(self, call: PlacementCall) -> Customer:
        contact_id, prefix = call.entity_id, ""
        if call.entity == "deal":
            deal = self._as_user("crm.deal.get", call.auth_id, {"id": call.entity_id},
                                 f"deal {call.entity_id}")
            title = str(deal.get("TITLE") or "").strip()[:TEXT_MAX]
            prefix = self.t._("deal %(title)s #%(id)s", title=title, id=call.entity_id) \
                if title else self.t._("deal #%(id)s", id=call.entity_id)
            found = entity_id(deal.get("CONTACT_ID"))
            if found is None:
                return Customer(None, prefix)
            contact_id = found
        contact = self._as_user("crm.contact.get", call.auth_id, {"id": contact_id},
                                f"contact {contact_id}")
        name = _name(contact, self.t._("contact #%(id)s", id=contact_id))
        return Customer(contact_id, f"{name} · {prefix}" if prefix else name)

    # -- the page and its forms ------------------------------------------------------------
    def ref(self, contact_id: str) -> AccountRef:
        return AccountRef("bitrix24", self.settings.portal_key, contact_id)

    def page(self, manager: Manager, customer: Customer) -> TabPage:
        if customer.contact_id is None:
            return TabPage(manager, customer, None, [])
        ref = self.ref(customer.contact_id)
        try:
            account = self.ledger.account(ref)
            history = self.ledger.history(ref, limit=HISTORY_LIMIT)
        except AccountNotFoundError:
            account, history = None, []
        forms = {operation: self.forms.issue(
            user_id=manager.user_id, user_name=manager.name, admin=manager.admin,
            contact_id=customer.contact_id, label=customer.label, operation=operation)
            for operation in ("bonus", "redeem", "reward")} if manager.editor else {}
        now = self.ledger.clock()
        rewards = [(r.id, r.name, r.cost) for r in self.services.rewards.list()
                   if r.open_at(now)] if manager.editor else []
        return TabPage(manager, customer, account, history, forms, rewards)

    def from_form(self, grant: FormGrant) -> tuple[Manager, Customer]:
        """Who sent a verified form, and for whom: the page to answer with."""
        editor = grant.admin or grant.user_id in self.settings.tab_editors
        return (Manager(grant.user_id, grant.user_name, grant.admin, editor),
                Customer(grant.contact_id, grant.label))

    def change(self, grant: FormGrant, points: Decimal, reason: str) -> Result:
        """Grant or redeem as the form says, once per form (its nonce is the key)."""
        manager, customer = self.from_form(grant)
        if not manager.editor or grant.operation not in ("bonus", "redeem"):
            raise TabRefused(403, "forbidden", "only portal admins and bitrix24.tab_editors "
                                               "may change balances, with those forms")
        assert customer.contact_id is not None
        ref = self.ref(customer.contact_id)
        key = f"bitrix24:{self.settings.portal_key}:tab:{grant.nonce}"
        fingerprint = request_fingerprint(f"tab:{grant.operation}",
                                          {"points": points, "reason": reason})
        if grant.operation == "bonus":
            return self.ledger.grant_bonus(ref, BONUS_NAME, key=key, points=points,
                                           comment=reason, actor=manager.actor,
                                           fingerprint=fingerprint)
        return self.ledger.redeem(ref, points, key=key, comment=reason, actor=manager.actor,
                                  fingerprint=fingerprint)


    def claim(self, grant: FormGrant, reward: str) -> Claimed:
        """Claim a reward for the customer, once per form (its nonce is the key)."""
        manager, customer = self.from_form(grant)
        if not manager.editor or grant.operation != "reward":
            raise TabRefused(403, "forbidden", "only portal admins and bitrix24.tab_editors "
                                               "may claim rewards, with the reward form")
        assert customer.contact_id is not None
        return self.services.claims.claim(
            self.ref(customer.contact_id), reward,
            key=f"bitrix24:{self.settings.portal_key}:tab:{grant.nonce}", via="bitrix24:tab",
            actor=manager.actor,
            fingerprint=request_fingerprint("tab:reward", {"reward": reward}))


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
