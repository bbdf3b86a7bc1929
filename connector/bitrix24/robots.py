"""Robots managers put on deal stages: accrue, redeem, read a balance, claim a reward.

Each call is answered with `bizproc.event.send` so the next robots can use the values (set
the deal's discount, send an SMS with the balance). A call that cannot be served still answers,
with `message` saying why: a robot never waits in silence.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connector import crm_texts
from connector.bitrix24.fetch import Fetched
from connector.codes import attach as promo_attach
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.errors import AccountNotFoundError, LedgerError
from connector.i18n import translator
from connector.inbox import InboxItem
from connector.ledger.views import AccountRef
from connector.money import parse_amount
from connector.referrals.linking import Linker
from connector.services import Services
from connector.triggers import from_results, record
from connector.worker import Outcome
from mappings import bitrix24 as b24
from mappings.domain import ProductRow, entity_id

ACCRUE, REDEEM, BALANCE = "loyalty_accrue", "loyalty_redeem", "loyalty_balance"
REFER = "loyalty_referral"
PROMO = "loyalty_promo"
REWARD = "loyalty_reward"
NPS = "loyalty_nps"
_MESSAGE = {"Name": {"ru": "Сообщение", "en": "Message"}, "Type": "string"}
_BALANCE = {"Name": {"ru": "Баланс баллов", "en": "Points balance"}, "Type": "double"}
# bizproc.robot.add definitions (api-reference/bizproc/bizproc-robot/bizproc-robot-add.md)
ROBOTS: dict[str, dict[str, Any]] = {
    ACCRUE: {
        "NAME": {"ru": "Лояльность: начислить баллы", "en": "Loyalty: grant points"},
        "PROPERTIES": {
            "amount": {"Name": {"ru": "Баллы", "en": "Points"}, "Type": "double"},
            "bonus": {"Name": {"ru": "Именной бонус (review, ...)", "en": "Named bonus"},
                      "Type": "string"},
            "comment": {"Name": {"ru": "Комментарий", "en": "Comment"}, "Type": "string"},
        },
        "RETURN_PROPERTIES": {
            "accrued": {"Name": {"ru": "Начислено", "en": "Granted"}, "Type": "double"},
            "balance": _BALANCE, "message": _MESSAGE},
    },
    REDEEM: {
        "NAME": {"ru": "Лояльность: списать баллы", "en": "Loyalty: pay with points"},
        "PROPERTIES": {
            "amount": {"Name": {"ru": "Сколько баллов списать", "en": "Points to redeem"},
                       "Type": "double", "Required": "Y"},
            "comment": {"Name": {"ru": "Комментарий", "en": "Comment"}, "Type": "string"},
        },
        "RETURN_PROPERTIES": {
            "redeemed": {"Name": {"ru": "Списано", "en": "Redeemed"}, "Type": "double"},
            "balance": _BALANCE, "message": _MESSAGE},
    },
    BALANCE: {
        "NAME": {"ru": "Лояльность: баланс клиента", "en": "Loyalty: customer balance"},
        "PROPERTIES": {},
        "RETURN_PROPERTIES": {
            "balance": _BALANCE,
            "tier": {"Name": {"ru": "Уровень", "en": "Tier"}, "Type": "string"},
            "discount": {"Name": {"ru": "Скидка, %", "en": "Discount, %"}, "Type": "double"},
            "expiring_points": {"Name": {"ru": "Сгорят баллов", "en": "Points expiring"},
                                "Type": "double"},
            "expiring_date": {"Name": {"ru": "Дата сгорания", "en": "Expiry date"},
                              "Type": "date"},
            "message": _MESSAGE},
    },
    REFER: {
        "NAME": {"ru": "Лояльность: клиент пришёл по коду друга",
                 "en": "Loyalty: customer referred by a code"},
        "PROPERTIES": {
            "code": {"Name": {"ru": "Код друга", "en": "Referral code"}, "Type": "string",
                     "Required": "Y"},
        },
        "RETURN_PROPERTIES": {
            "outcome": {"Name": {"ru": "Результат", "en": "Outcome"}, "Type": "string"},
            "message": _MESSAGE},
    },
    PROMO: {
        "NAME": {"ru": "Лояльность: промокод к сделке", "en": "Loyalty: promo code for the deal"},
        "PROPERTIES": {
            "code": {"Name": {"ru": "Промокод", "en": "Promo code"}, "Type": "string",
                     "Required": "Y"},
        },
        "RETURN_PROPERTIES": {
            "outcome": {"Name": {"ru": "Результат", "en": "Outcome"}, "Type": "string"},
            "points": {"Name": {"ru": "Баллы по промокоду", "en": "Promo points"},
                       "Type": "double"},
            "message": _MESSAGE},
    },
    REWARD: {
        "NAME": {"ru": "Лояльность: выдать награду за баллы",
                 "en": "Loyalty: claim a reward for points"},
        "PROPERTIES": {
            "reward": {"Name": {"ru": "Код награды (id из каталога)", "en": "Reward id"},
                       "Type": "string", "Required": "Y"},
        },
        "RETURN_PROPERTIES": {
            "code": {"Name": {"ru": "Код получения", "en": "Claim code"}, "Type": "string"},
            "balance": _BALANCE, "message": _MESSAGE},
    },
    NPS: {
        "NAME": {"ru": "Лояльность: оценка NPS от клиента",
                 "en": "Loyalty: the customer's NPS answer"},
        "PROPERTIES": {
            "score": {"Name": {"ru": "Оценка 0-10 (порекомендует ли нас)",
                               "en": "Score 0-10 (would recommend us)"},
                      "Type": "int", "Required": "Y"},
        },
        "RETURN_PROPERTIES": {
            "category": {"Name": {"ru": "Группа (promoter, passive, detractor)",
                                  "en": "Group (promoter, passive, detractor)"},
                         "Type": "string"},
            "bonus": {"Name": {"ru": "Бонус за ответ", "en": "Bonus for answering"},
                      "Type": "double"},
            "message": _MESSAGE},
    },
}


class RobotRunner:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.portal = services.settings.bitrix24.portal_key
        self.linker = Linker(services.db, services.ledger)
        self._promo_checked: dict[str, promo_attach.Outcome] = {}
        # A robot's `message` is shown to the portal's managers: program.language. Its
        # success stays "ok", which a business process's conditions compare against.
        self.t = translator(services.settings.program.language)

    def run(self, calls: list[tuple[InboxItem, b24.RobotCall]],
            fetched: Fetched) -> dict[int, Outcome]:
        answers: list[tuple[InboxItem, b24.RobotCall, dict[str, str]]] = []
        outcomes: dict[int, Outcome] = {}
        for item, call in calls:
            key = ("deal", call.deal_id or "")
            if key in fetched.failed:
                outcomes[item.id] = Outcome.retry(fetched.failed[key])
                continue
            answers.append((item, call, self.serve(call, fetched.found.get(key),
                                                   fetched.product_rows(key[1]))))
        self._promo_checked.clear()  # what this group attached; a retried call attaches again
        for start in range(0, len(answers), BATCH_LIMIT):
            outcomes.update(self._send(answers[start:start + BATCH_LIMIT]))
        return outcomes

    def serve(self, call: b24.RobotCall, deal: dict[str, Any] | None,
              rows: tuple[ProductRow, ...] | None = None) -> dict[str, str]:
        t = self.t
        if call.code not in ROBOTS:
            return {"message": t._("unknown robot %(code)s", code=repr(call.code))}
        if deal is None:
            return {"message": t._("%(document)s is not a deal or no longer exists",
                                   document=call.document)}
        contact = entity_id(deal.get("CONTACT_ID"))
        if contact is None:
            return {"message": t._("the deal has no contact: add one to use loyalty points")}
        ref = AccountRef("bitrix24", self.portal, contact)
        key = b24.robot_key(self.portal, call.event_token)
        try:
            if call.code == BALANCE:
                return self._balance(ref)
            if call.code == REDEEM:
                return self._redeem(ref, call, deal, key, rows)
            if call.code == REFER:
                return self._refer(ref, call)
            if call.code == PROMO:
                return self._promo(ref, call, deal)
            if call.code == REWARD:
                return self._reward(ref, call, key)
            if call.code == NPS:
                return self._nps(ref, call, deal, key)
            return self._accrue(ref, call, key)
        except (LedgerError, ValueError) as exc:
            return {"message": getattr(exc, "detail", str(exc))}

    def _balance(self, ref: AccountRef) -> dict[str, str]:
        try:
            view = self.services.ledger.account(ref)
        except AccountNotFoundError:
            return {"balance": "0", "tier": self.services.program.settings.tiers[0].name,
                    "discount": "0", "expiring_points": "0", "expiring_date": "",
                    "message": self.t._("no loyalty account yet")}
        local = view.next_expiry_at.astimezone(self.services.program.zone).date() \
            if view.next_expiry_at else None
        return {"balance": str(view.available), "tier": view.tier,
                "discount": str(view.discount_percent),
                "expiring_points": str(view.next_expiry_points),
                "expiring_date": local.isoformat() if local else "", "message": "ok"}

    def _redeem(self, ref: AccountRef, call: b24.RobotCall, deal: dict[str, Any],
                key: str, rows: tuple[ProductRow, ...] | None) -> dict[str, str]:
        wanted = parse_amount(call.properties.get("amount") or "0")
        purchase = b24.parse_amount(deal.get("OPPORTUNITY"))
        result = self.services.ledger.redeem(
            ref, wanted, key=key, purchase_amount=purchase if purchase else None,
            partial=True, actor="bitrix24-robot", comment=call.properties.get("comment"),
            rows=rows,
            source=f"{b24.deal_source(self.portal, str(deal.get('ID')))}:redeem")
        redeemed = -result.points
        note = "ok" if redeemed == wanted else self.t._(
            "capped from %(wanted)s to %(redeemed)s by the balance and the program's share of "
            "the deal", wanted=self.t.figure(wanted), redeemed=self.t.figure(redeemed))
        return {"redeemed": str(redeemed), "balance": str(result.balance), "message": note}

    def _accrue(self, ref: AccountRef, call: b24.RobotCall, key: str) -> dict[str, str]:
        bonus = (call.properties.get("bonus") or "").strip()
        amount = call.properties.get("amount") or ""
        points = parse_amount(amount) if amount.strip() else None
        if not bonus and points is None:
            return {"message": self.t._("set either amount or bonus")}
        result = self.services.ledger.grant_bonus(
            ref, bonus or "manual", key=key, points=None if bonus else points,
            actor="bitrix24-robot", comment=call.properties.get("comment"))
        record(self.services.db, from_results([result]), program=self.services.program)
        granted = result.points if result.entry_id else Decimal(0)
        return {"accrued": str(granted), "balance": str(result.balance),
                "message": "ok" if result.entry_id else self.t._(
                    "the bonus is 0 in the program")}

    def _reward(self, ref: AccountRef, call: b24.RobotCall, key: str) -> dict[str, str]:
        reward = (call.properties.get("reward") or "").strip()
        if not reward:
            return {"code": "", "message": self.t._("set the reward id")}
        claimed = self.services.claims.claim(ref, reward, key=key, via="bitrix24:robot",
                                             actor="bitrix24-robot")
        return {"code": claimed.claim.code, "balance": str(claimed.result.balance),
                "message": "ok"}

    def _nps(self, ref: AccountRef, call: b24.RobotCall, deal: dict[str, Any],
             key: str) -> dict[str, str]:
        # One answer per robot run (its event token), whatever the score says.
        recorded = self.services.nps.record(
            ref, call.properties.get("score"), source="bitrix24:robot", source_key=key,
            raw={"robot": call.code, "document": call.document, "deal": str(deal.get("ID")),
                 "properties": call.properties}, actor="bitrix24-robot")
        return {"category": recorded.category, "bonus": str(recorded.bonus_points),
                "message": "ok"}

    def refer_first(self, calls: list[tuple[InboxItem, b24.RobotCall]],
                    fetched: Fetched) -> None:
        """Link the contacts of referral robot calls before the group's deals are settled,
        so a deal won in the same group is already the newcomer's first purchase."""
        for _, call in calls:
            deal = fetched.found.get(("deal", call.deal_id or ""))
            contact = entity_id(deal.get("CONTACT_ID")) if deal else None
            if call.code == REFER and contact is not None:
                self.linker.link(AccountRef("bitrix24", self.portal, contact),
                                 call.properties.get("code"), via="bitrix24:robot")

    def promo_first(self, calls: list[tuple[InboxItem, b24.RobotCall]],
                    fetched: Fetched) -> None:
        """Attach the codes of promo robot calls to their deals before the group's deals
        are settled, so a deal won in the same group already uses its code."""
        for _, call in calls:
            deal = fetched.found.get(("deal", call.deal_id or ""))
            contact = entity_id(deal.get("CONTACT_ID")) if deal else None
            if call.code == PROMO and deal is not None and contact is not None:
                self._promo_checked[call.event_token] = self._attach(
                    AccountRef("bitrix24", self.portal, contact), call, deal)

    def _attach(self, ref: AccountRef, call: b24.RobotCall, deal: dict[str, Any]
                ) -> promo_attach.Outcome:
        return promo_attach.attach(
            self.services.db, self.services.ledger, b24.deal_source(self.portal, str(deal["ID"])),
            call.properties.get("code"), ref=ref, amount=b24.parse_amount(
                deal.get("OPPORTUNITY")), via="bitrix24:robot")

    def _promo(self, ref: AccountRef, call: b24.RobotCall,
               deal: dict[str, Any]) -> dict[str, str]:
        checked = self._promo_checked.pop(call.event_token, None) \
            or self._attach(ref, call, deal)
        # Settled in this group: what the accrual made of the code.
        used = promo_attach.used_by(self.services.db,
                                    b24.deal_source(self.portal, str(deal["ID"])))
        outcome = used if used is not None and used.code == checked.code else checked
        return {"outcome": outcome.outcome, "points": str(outcome.points),
                "message": outcome.message(self.t) if outcome.refused or outcome.outcome ==
                "applied" else self.t._("promo code %(code)s: used when the deal is won",
                                        code=outcome.code)}

    def _refer(self, ref: AccountRef, call: b24.RobotCall) -> dict[str, str]:
        link = self.linker.link(ref, call.properties.get("code"), via="bitrix24:robot")
        if link is None:
            return {"outcome": "", "message": self.t._("set the referral code")}
        return {"outcome": link.outcome, "message": link.detail if link.skipped else "ok"}

    def _send(self, answers: list[tuple[InboxItem, b24.RobotCall, dict[str, str]]]
              ) -> dict[int, Outcome]:
        commands = {f"r{item.id}": ("bizproc.event.send", {
            "EVENT_TOKEN": call.event_token, "RETURN_VALUES": values,
            "LOG_MESSAGE": crm_texts.reason(values.get("message", "ok"), self.t)})
            for item, call, values in answers}
        result = self.client.batch(commands)
        outcomes = {}
        for item, _, values in answers:
            error = result.errors.get(f"r{item.id}")
            if error is None:
                outcomes[item.id] = Outcome.done() if values.get("message") == "ok" else \
                    Outcome.skipped(f"answered the robot: {values.get('message')}")
            elif str(error.get("error", "")).upper() == "ACCESS_DENIED":
                outcomes[item.id] = Outcome.skipped("the robot no longer waits (event token "
                                                    "expired or used)")
            else:
                outcomes[item.id] = Outcome.retry(f"bizproc.event.send: {error}")
        return outcomes
