"""Actions for the portal's standard "Webhook" automation rule, which needs no app.

The rule calls /bitrix24/actions/<secret>/accrue | bonus/<name> | redeem/<points|max> |
promo/<code> | reward/<reward id> | nps/<0-10> with the
deal in the query (`deal_id={{ID}}`) and waits for no answer, like amoCRM's digital-pipeline
actions: the receiver stores the call, and here it is applied once per deal and action (the
same key in the inbox and in the ledger), its outcome written to the deal's timeline
(`crm.timeline.comment.add`, since the rule has no way to read an answer).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connector import crm_texts, mirror
from connector.bitrix24.fetch import Fetched
from connector.codes import attach as promo_attach
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.errors import CRMError, LedgerError
from connector.i18n import translator
from connector.inbox import InboxItem
from connector.ledger.views import AccountRef
from connector.services import Services
from connector.triggers import from_results, record
from connector.worker import Outcome
from mappings import bitrix24 as b24
from mappings.domain import ProductRow, entity_id
from mappings.phpquery import decode

log = logging.getLogger(__name__)
KIND = "action:"
ACTOR = "bitrix24-webhook-rule"
# The inbox kind "action:bonus:<name>" fits inbox_events.kind (64) with names up to 51.
# ASCII digits only: \d would also take other scripts' digits.
ACTION = re.compile(r"accrue|bonus/[A-Za-z0-9_-]{1,51}|redeem/(max|[0-9]{1,9}(\.[0-9]{1,2})?)"
                    r"|promo/[A-Za-z0-9-]{1,50}|reward/[a-z0-9][a-z0-9_-]{0,47}"
                    r"|nps/(10|[0-9])")
# The deal's ID as the rule's field insert gives it, or as a document id (DEAL_<id>).
DEAL = re.compile(r"(?:DEAL_)?([0-9]{1,18})")
REDEEM_ALL = Decimal("1e12")


@dataclass(frozen=True)
class Action:
    verb: str  # accrue, bonus, redeem, promo, reward, nps
    # the bonus name, the points or "max", the promo code, the reward id, the NPS score;
    # "" for accrue
    argument: str
    deal_id: str

    @property
    def path(self) -> str:
        return f"{self.verb}/{self.argument}" if self.argument else self.verb


def kind(action: str) -> str:
    """The inbox kind of a URL action: action:accrue, action:bonus:<name>, ..."""
    return KIND + action.replace("/", ":", 1)


def key(portal: str, action: str, deal_id: str) -> str:
    """One key per deal and action, in the inbox and the ledger: applied once."""
    return f"bitrix24:{portal}:action:{action}:deal:{deal_id}"


def parse(item: InboxItem) -> Action:
    """The stored action; PayloadError (or QueryError) when it cannot be read."""
    verb, _, argument = item.kind.removeprefix(KIND).partition(":")
    form = decode(item.body)
    match = DEAL.fullmatch(str(form.get("deal_id") or ""))
    action = Action(verb, argument, match.group(1) if match else "")
    if match is None or not ACTION.fullmatch(action.path):
        raise b24.PayloadError(f"not an action: {item.kind} {item.body[:80]!r}")
    return action


class ActionRunner:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.bitrix24
        self.portal = self.settings.portal_key
        self.ledger = services.ledger
        self._promo: dict[int, promo_attach.Outcome] = {}
        # The timeline is read by the portal's managers: their language, program.language.
        self.t = translator(services.settings.program.language)

    def promo_first(self, actions: list[tuple[InboxItem, Action]], fetched: Fetched) -> None:
        """Attach the codes of promo/<code> calls to their deals before the group's deals
        are settled, so a deal won in the same group already uses its code."""
        for item, action in actions:
            deal = fetched.found.get(("deal", action.deal_id))
            contact = entity_id(deal.get("CONTACT_ID")) if deal else None
            if action.verb == "promo" and deal is not None and contact is not None:
                self._promo[item.id] = promo_attach.attach(
                    self.services.db, self.ledger,
                    b24.deal_source(self.portal, action.deal_id), action.argument,
                    ref=AccountRef("bitrix24", self.portal, contact),
                    amount=b24.parse_amount(deal.get("OPPORTUNITY")), via="bitrix24:action")

    def run(self, actions: list[tuple[InboxItem, Action]],
            fetched: Fetched) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        comments: list[tuple[InboxItem, Action, str]] = []
        for item, action in actions:
            wanted = ("deal", action.deal_id)
            if wanted in fetched.failed:
                outcomes[item.id] = Outcome.retry(fetched.failed[wanted])
                continue
            deal = fetched.found.get(wanted)
            if deal is None:
                outcomes[item.id] = Outcome.skipped(f"deal {action.deal_id} no longer exists")
                continue
            if action.verb == "promo" and item.id in self._promo:
                applied, text = self._promo_text(action, self._promo.pop(item.id))
            else:
                applied, text = self.apply(action, deal, fetched.product_rows(action.deal_id))
            comments.append((item, action, text))
            outcomes[item.id] = Outcome.done() if applied else Outcome.skipped(text)
        self._promo.clear()  # what this group attached; a retried call attaches again
        for start in range(0, len(comments), BATCH_LIMIT):
            self._comment(comments[start:start + BATCH_LIMIT])
        return outcomes

    def apply(self, action: Action, deal: dict[str, Any],
              rows: tuple[ProductRow, ...] | None = None) -> tuple[bool, str]:
        """(whether the ledger changed or had changed for it, the timeline text)."""
        t = self.t
        contact = entity_id(deal.get("CONTACT_ID"))
        if contact is None:
            return False, t._("Loyalty: the deal has no contact; add one to use loyalty points")
        ref = AccountRef("bitrix24", self.portal, contact)
        try:
            if action.verb == "accrue":
                return self._accrue(ref, action, deal, rows)
            if action.verb == "bonus":
                return self._bonus(ref, action)
            if action.verb == "promo":  # not attached: the deal had no contact then
                return False, t._(
                    "Loyalty: the deal has no contact; add one to use a promo code")
            if action.verb == "reward":
                return self._reward(ref, action)
            if action.verb == "nps":
                return self._nps(ref, action)
            return self._redeem(ref, action, deal, rows)
        except (LedgerError, ArithmeticError, ValueError) as exc:
            # The ledger's reason as it gave it (English): its words are not marked.
            return False, crm_texts.reason(t=t, text=getattr(exc, "detail", exc))

    def _accrue(self, ref: AccountRef, action: Action, deal: dict[str, Any],
                rows: tuple[ProductRow, ...] | None) -> tuple[bool, str]:
        # The deal's purchase, settled now as its won event would settle it (the same source,
        # so never twice): a rule cannot make a deal that is not won earn, or the next event
        # on it would take the points back.
        state = b24.purchase_state(deal, portal=self.portal,
                                   categories=self.settings.deal_categories, rows=rows)
        if state.amount is None:
            return False, self.t._("Loyalty: nothing accrued: %(reason)s",
                                   reason=state.reason)
        results = self.ledger.settle_purchase(
            ref, state.source, state.amount, category=state.category,
            occurred_at=state.occurred_at, source_data=state.raw, actor=ACTOR,
            comment=f"deal {action.deal_id}", rows=state.rows)
        mirror.deal_settled(self.services.db, ref, action.deal_id,
                            from_results(results, deal_id=action.deal_id),
                            program=self.services.program)
        t = self.t
        balance = t.figure(self.ledger.account(ref).balance)
        earned = sum((r.points for r in results if r.entry_id and not r.duplicate), Decimal(0))
        if earned:
            return True, t._("Loyalty: %(points)s for this deal, balance %(balance)s",
                             points=t.ledger_points(earned, signed=True), balance=balance)
        return True, t._("Loyalty: this deal's points were already accrued, balance "
                         "%(balance)s", balance=balance)

    def _promo_text(self, action: Action, checked: promo_attach.Outcome) -> tuple[bool, str]:
        used = promo_attach.used_by(self.services.db,
                                    b24.deal_source(self.portal, action.deal_id))
        t = self.t
        if used is not None and used.code == checked.code:
            return not used.refused, crm_texts.reason(t=t, text=used.message(t))
        if checked.refused:
            return False, crm_texts.reason(t=t, text=checked.message(t))
        return True, crm_texts.promo_pending(checked.code, checked.campaign, t)

    def _bonus(self, ref: AccountRef, action: Action) -> tuple[bool, str]:
        result = self.ledger.grant_bonus(ref, action.argument,
                                         key=key(self.portal, action.path, action.deal_id),
                                         actor=ACTOR, comment=f"deal {action.deal_id}")
        record(self.services.db, from_results([result], deal_id=action.deal_id),
               program=self.services.program)
        t = self.t
        if result.entry_id is None:
            return False, t._("Loyalty: the bonus %(name)s is 0 in the program",
                              name=action.argument)
        if result.duplicate:  # the rule ran again after inbox retention forgot the first run
            return True, t._("Loyalty: bonus %(name)s was granted for this deal already, "
                             "balance %(balance)s", name=action.argument,
                             balance=t.figure(self.ledger.account(ref).balance))
        return True, t._("Loyalty: bonus %(name)s %(points)s, balance %(balance)s",
                         name=action.argument,
                         points=t.ledger_points(result.points, signed=True),
                         balance=t.figure(result.balance))

    def _reward(self, ref: AccountRef, action: Action) -> tuple[bool, str]:
        """Claimed once per deal; the claim's trigger tells staff to hand it over."""
        claimed = self.services.claims.claim(
            ref, action.argument, key=key(self.portal, action.path, action.deal_id),
            via="bitrix24:action", actor=ACTOR)
        t = self.t
        if claimed.result.duplicate:  # as for a bonus: the first run's claim, not a second
            return True, t._(
                "Loyalty: reward %(reward)s was claimed for this deal already, code %(code)s "
                "(%(status)s), balance %(balance)s", reward=claimed.claim.reward_name,
                code=claimed.claim.code, status=crm_texts.claim_status(claimed.claim.status, t),
                balance=t.figure(self.ledger.account(ref).balance))
        return True, crm_texts.reward_claimed(
            claimed.claim.reward_name, claimed.claim.code, -claimed.result.points,
            claimed.result.balance, t)

    def _nps(self, ref: AccountRef, action: Action) -> tuple[bool, str]:
        """The answer in the URL (a rule per score, or a field insert), once per deal and
        score."""
        recorded = self.services.nps.record(
            ref, action.argument, source="bitrix24:action",
            source_key=key(self.portal, action.path, action.deal_id),
            raw={"action": action.path, "deal_id": action.deal_id}, actor=ACTOR)
        return True, crm_texts.nps(recorded.score, recorded.bonus_points
                                   if recorded.bonus_entry_id else None, self.t)

    def _redeem(self, ref: AccountRef, action: Action, deal: dict[str, Any],
                rows: tuple[ProductRow, ...] | None) -> tuple[bool, str]:
        wanted = REDEEM_ALL if action.argument == "max" else Decimal(action.argument)
        purchase = b24.parse_amount(deal.get("OPPORTUNITY"))
        result = self.ledger.redeem(
            ref, wanted, key=key(self.portal, action.path, action.deal_id), partial=True,
            purchase_amount=purchase if purchase else None, actor=ACTOR, rows=rows,
            comment=f"deal {action.deal_id}",
            source=f"{b24.deal_source(self.portal, action.deal_id)}:redeem")
        redeemed = -result.points
        t = self.t
        if result.duplicate:  # as for a bonus: the first run's result, not a second one
            return True, t._("Loyalty: %(points)s were redeemed for this deal already, "
                             "balance %(balance)s", points=t.ledger_points(redeemed),
                             balance=t.figure(self.ledger.account(ref).balance))
        if action.argument == "max" or redeemed == wanted:
            return True, crm_texts.redeemed(redeemed, result.balance, t)
        return True, t._("Loyalty: redeemed %(points)s (asked %(wanted)s: capped by the "
                         "balance and the program's share of the deal), balance %(balance)s",
                         points=t.ledger_points(redeemed), wanted=t.number(wanted),
                         balance=t.figure(result.balance))

    def _comment(self, comments: list[tuple[InboxItem, Action, str]]) -> None:
        """The outcomes on the deals' timelines. The ledger part is done: a comment that may
        have been written (a timeout) or was refused is logged, never written again."""
        commands = {f"a{item.id}": ("crm.timeline.comment.add", {"fields": {
            "ENTITY_ID": action.deal_id, "ENTITY_TYPE": "deal", "COMMENT": text}})
            for item, action, text in comments}
        try:
            result = self.client.batch(commands)
        except CRMError as exc:  # also a portal still busy after the client's retries
            log.warning("timeline comments on %d deal(s) not written: %s", len(comments),
                        exc.detail)
            return
        for item, action, _ in comments:
            if error := result.errors.get(f"a{item.id}"):
                log.warning("timeline comment on deal %s not written: %s", action.deal_id,
                            error.get("error_description") or error)
