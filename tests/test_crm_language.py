"""What the connector writes into a CRM for its managers speaks program.language: a
Bitrix24 deal's timeline comment (the webhook rule's outcome) and an amoCRM lead note, in
Russian (the default), Ukrainian and English, against the sandbox CRMs; the points word
agrees with the number (1 балл, 2 балла, 5 баллов)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from connector.i18n import translator
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from tests.conftest import Clock, fresh_services
from tests.test_amocrm_e2e import FORM, amo_settings, running, status
from tests.test_amocrm_e2e import SECRET as AMO_SECRET
from tests.test_bitrix24_actions import SECRET, comments, customer, rule
from tests.test_bitrix24_e2e import EVENTS_URL, Harness, b24_settings


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(clock=ManualClock()) as fake:
        fake.bind_event("ONCRMDEALUPDATE", EVENTS_URL)
        fake.bind_event("ONCRMCONTACTADD", EVENTS_URL)
        yield fake


def bitrix24(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, clock: Clock,
             language: str | None) -> Harness:
    extra = {} if language is None else {"language": language}
    settings = b24_settings(tmp_path, database_url, portal, actions_secret=SECRET, **extra)
    return Harness(portal, fresh_services(settings, clock=clock), portal.clock, clock)


@pytest.mark.parametrize(("language", "expected"), [
    (None, ["Лояльность: бонус review +50,00 баллов, баланс 150,00",
            "Лояльность: списано 101,00 балл, баланс 49,00",
            "Лояльность: в сделке нет контакта; добавьте его, чтобы начислять и списывать "
            "баллы"]),
    ("uk", ["Лояльність: бонус review +50,00 балів, баланс 150,00",
            "Лояльність: списано 101,00 бал, баланс 49,00",
            "Лояльність: в угоді немає контакту; додайте його, щоб нараховувати та списувати "
            "бали"]),
    ("en", ["Loyalty: bonus review +50.00 points, balance 150.00",
            "Loyalty: redeemed 101.00 points, balance 49.00",
            "Loyalty: the deal has no contact; add one to use loyalty points"]),
])
def test_a_bitrix24_timeline_comment_is_in_the_program_language(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, clock: Clock,
        language: str | None, expected: list[str]) -> None:
    h = bitrix24(tmp_path, database_url, portal, clock, language)
    try:
        anna = customer(h)  # the welcome bonus: 100
        deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
        rule(h, "bonus/review", deal)
        rule(h, "redeem/101", deal)
        orphan = h.portal.add_deal(OPPORTUNITY="1000.00")
        rule(h, "bonus/review", orphan)
        h.process()
        assert h.balance(anna) == D("49.00")
        assert comments(h, deal) + comments(h, orphan) == expected
    finally:
        h.services.close()


@pytest.mark.parametrize(("language", "expected"), [
    ("ru", ["Лояльность: бонус welcome +100,00 баллов, баланс 100,00",
            "Лояльность: списано 100,00 баллов, баланс 0,00",
            "Лояльность: ответ NPS 10 записан, бонус +2,00 балла"]),
    ("uk", ["Лояльність: бонус welcome +100,00 балів, баланс 100,00",
            "Лояльність: списано 100,00 балів, баланс 0,00",
            "Лояльність: відповідь NPS 10 записано, бонус +2,00 бали"]),
    ("en", ["Loyalty: bonus welcome +100.00 points, balance 100.00",
            "Loyalty: redeemed 100.00 points, balance 0.00",
            "Loyalty: NPS answer 10 recorded, bonus +2.00 points"]),
])
def test_an_amocrm_lead_note_is_in_the_program_language(
        tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock, language: str, expected: list[str]) -> None:
    settings = amo_settings(tmp_path, database_url, account, language=language)
    settings = settings.model_copy(update={"program": settings.program.model_copy(
        update={"nps": settings.program.nps.model_copy(update={"bonus": D("2")})})})
    with running(settings, account, time, clock) as h:
        h.account.put_contact(10971465)
        h.account.put_lead(5, contact=10971465, price=1000, status=20067736)
        body = webhook_body("leads", "status", [status(5, 20067736)])
        for action in ("bonus/welcome", "redeem/max", "nps/10"):
            assert h.web.post(f"/amocrm/actions/{AMO_SECRET}/{action}", data=body,
                              content_type=FORM).status_code == 200
        h.process()
        assert [note["params"]["text"] for note in h.account.state.notes] == expected


@pytest.mark.parametrize(("language", "words"), [
    ("ru", ["1,00 балл", "2,00 балла", "5,00 баллов", "21,00 балл", "2,50 балла"]),
    ("uk", ["1,00 бал", "2,00 бали", "5,00 балів", "21,00 бал", "2,50 бала"]),
    ("en", ["1.00 point", "2.00 points", "5.00 points", "21.00 points", "2.50 points"]),
])
def test_points_in_a_crm_text_agree_with_the_number(language: str, words: list[str]) -> None:
    t = translator(language)
    assert [t.ledger_points(D(n)) for n in ("1", "2", "5", "21", "2.5")] == words


@pytest.mark.parametrize(("language", "note"), [
    ("ru", "Лояльность: уровень повышен"), ("uk", "Лояльність: рівень підвищено"),
    ("en", "Loyalty: tier upgraded")])
def test_an_amocrm_trigger_note_and_task_are_in_the_program_language(
        tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock, language: str, note: str) -> None:
    triggers = {"loyalty_tier_up": {"note": True, "task": True},
                "loyalty_points_accrued": False, "loyalty_welcome": False}
    settings = amo_settings(tmp_path, database_url, account, language=language,
                            triggers=triggers)
    with running(settings, account, time, clock) as h:
        account.put_contact(10971465)
        account.put_lead(1, contact=10971465, price=40000)
        h.hook("leads", "status", status(1))
        h.process()
        assert [n["params"]["text"] for n in account.state.notes] == [note]
        assert [task["text"] for task in account.state.tasks] == [note]


@pytest.mark.parametrize(("language", "comment"), [
    (None, "Лояльность: начислен приветственный бонус: нет сделки, на которой можно "
           "запустить триггер автоматизации."),
    ("en", "Loyalty: welcome bonus granted: no deal to run the automation trigger on.")])
def test_a_trigger_with_no_deal_is_told_on_the_contact_in_the_program_language(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, clock: Clock,
        language: str | None, comment: str) -> None:
    extra = {} if language is None else {"language": language}
    settings = b24_settings(tmp_path, database_url, portal, comment_when_no_deal=True,
                            triggers={"loyalty_welcome": {"code": "welcome"}}, **extra)
    h = Harness(portal, fresh_services(settings, clock=clock), portal.clock, clock)
    try:
        anna = customer(h)  # the welcome bonus: its trigger has no deal to run on
        assert [c["comment"] for c in h.portal.timeline_comments
                if (c["entity_type"], c["entity_id"]) == ("contact", anna)] == [comment]
    finally:
        h.services.close()
