"""The "Webhook" automation rule without an app: /bitrix24/actions/<secret>/... against the fake
portal, end to end (receiver, inbox, worker, ledger, deal timeline)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from connector.errors import RetriableCRMError
from connector.inbox import InboxEvent
from connector.inbox_retention import delete_processed
from connector.sandbox import FakeBitrix24Portal, ManualClock
from tests.conftest import Clock, fresh_services
from tests.test_bitrix24_e2e import EVENTS_URL, Harness, b24_settings
from webhooks import create_app

SECRET = "Act10nsSecret0123456789"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(clock=ManualClock()) as fake:
        fake.bind_event("ONCRMDEALUPDATE", EVENTS_URL)
        fake.bind_event("ONCRMCONTACTADD", EVENTS_URL)
        yield fake


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
      clock: Clock) -> Iterator[Harness]:
    # English timeline comments: the texts below (Russian ones: test_crm_language.py).
    settings = b24_settings(tmp_path, database_url, portal, actions_secret=SECRET,
                            language="en")
    harness = Harness(portal, fresh_services(settings, clock=clock), portal.clock, clock)
    yield harness
    harness.services.close()


def rule(h: Harness, action: str, deal: int | str | None, *, method: str = "GET",
         secret: str = SECRET) -> Any:
    """What the portal's "Webhook" rule sends for the URL an admin typed."""
    query = "" if deal is None else f"?deal_id={deal}"
    return h.web.open(f"/bitrix24/actions/{secret}/{action}{query}", method=method)


def comments(h: Harness, deal: int) -> list[str]:
    return [c["comment"] for c in h.portal.timeline_comments
            if (c["entity_type"], c["entity_id"]) == ("deal", deal)]


def customer(h: Harness) -> int:
    anna = h.portal.add_contact(NAME="Anna")
    h.process()  # the welcome bonus: 100
    return anna


def test_a_bonus_is_granted_once_per_deal_and_written_to_its_timeline(h: Harness) -> None:
    anna = customer(h)
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    first = rule(h, "bonus/review", deal)
    assert (first.status_code, first.get_json()["duplicate"]) == (200, False)
    # the deal comes back to the stage, and the rule runs again (as a POST this time)
    assert rule(h, "bonus/review", deal, method="POST").get_json()["duplicate"] is True
    assert rule(h, "bonus/review", f"DEAL_{deal}").get_json()["duplicate"] is True
    h.process()
    assert h.balance(anna) == D("150.00")
    assert comments(h, deal) == ["Loyalty: bonus review +50.00 points, balance 150.00"]
    other = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="500.00")
    rule(h, "bonus/review", other)
    h.process()
    assert h.balance(anna) == D("200.00")  # once per deal, not once ever
    rule(h, "bonus/review", deal)
    h.process()
    assert h.balance(anna) == D("200.00") and len(comments(h, deal)) == 1


def test_a_rule_run_again_after_inbox_retention_says_it_was_done_already(h: Harness) -> None:
    """The inbox row that kept a deal's action to one run is gone after inbox.retention_days:
    the rule running again on the deal changes nothing (the ledger's key), and its timeline
    is not told the points were granted or redeemed again."""
    anna = customer(h)
    h.services.ledger.adjust(h.ref(anna), D("900"), key="seed", reason="test funds")
    h.services.rewards.create({"id": "mug", "name": "Mug", "cost": D("100")})
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    rule(h, "bonus/review", deal)
    rule(h, "redeem/200", deal)
    rule(h, "reward/mug", deal)
    h.process()
    assert h.balance(anna) == D("750.00")
    [claim] = h.services.claims.list()
    first = comments(h, deal)
    h.clock.advance(days=40)
    assert delete_processed(h.services.db, before=h.clock() - timedelta(days=30)) >= 2
    assert rule(h, "bonus/review", deal).get_json()["duplicate"] is False  # stored anew
    rule(h, "redeem/200", deal)
    rule(h, "reward/mug", deal)
    h.process()
    assert h.balance(anna) == D("750.00") and len(h.services.claims.list()) == 1
    assert comments(h, deal) == [*first,
                                 "Loyalty: bonus review was granted for this deal already, "
                                 "balance 750.00",
                                 "Loyalty: 200.00 points were redeemed for this deal already, "
                                 "balance 750.00",
                                 f"Loyalty: reward Mug was claimed for this deal already, code "
                                 f"{claim.code} (issued), balance 750.00"]


def test_a_redemption_is_capped_by_the_program_share_of_the_deal(h: Harness) -> None:
    anna = customer(h)
    h.services.ledger.adjust(h.ref(anna), D("4800"), key="seed", reason="test funds")
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    rule(h, "redeem/900", deal)
    h.process()
    assert h.balance(anna) == D("4400.00")  # 50% of 1000
    assert comments(h, deal) == [
        "Loyalty: redeemed 500.00 points (asked 900: capped by the balance and the program's "
        "share of the deal), balance 4,400.00"]
    second = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="200.00")
    rule(h, "redeem/max", second)
    h.process()
    assert comments(h, second) == ["Loyalty: redeemed 100.00 points, balance 4,300.00"]


def test_accrue_settles_a_won_deal_once_even_when_its_events_were_lost(h: Harness) -> None:
    anna = customer(h)
    won = h.won(anna, "10000.00")
    open_deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="5000.00")
    h.portal.drain_outbox()  # the outgoing webhook lost both deals' events
    rule(h, "accrue", won)
    rule(h, "accrue", open_deal)
    h.process()
    assert h.balance(anna) == D("400.00")  # 100 welcome + 3% of 10000
    assert comments(h, won) == ["Loyalty: +300.00 points for this deal, balance 400.00"]
    assert comments(h, open_deal) == ["Loyalty: nothing accrued: deal is not won"]
    with h.services.db.transaction(write=False) as session:
        outcomes = session.execute(select(InboxEvent.status, InboxEvent.last_error).where(
            InboxEvent.kind == "action:accrue").order_by(InboxEvent.id)).all()
    assert [tuple(row) for row in outcomes] == [
        ("done", None), ("skipped", "Loyalty: nothing accrued: deal is not won")]
    h.send("ONCRMDEALUPDATE", won)  # its event after all: nothing more
    h.process()
    assert h.balance(anna) == D("400.00")


def test_a_deal_without_contact_is_told_so_on_its_timeline(h: Harness) -> None:
    orphan = h.portal.add_deal(OPPORTUNITY="1000.00")
    rule(h, "bonus/review", orphan)
    h.process()
    assert comments(h, orphan) == [
        "Loyalty: the deal has no contact; add one to use loyalty points"]
    with h.services.db.transaction(write=False) as session:
        item = session.scalar(select(InboxEvent).where(InboxEvent.kind == "action:bonus:review"))
    assert item is not None and item.status == "skipped"


def test_a_timeline_comment_that_failed_is_not_written_again(h: Harness) -> None:
    anna = customer(h)
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    h.portal.fail_next(1, 400, "ACCESS_DENIED", method="crm.timeline.comment.add")
    rule(h, "bonus/review", deal)
    h.process()
    h.process()
    assert h.balance(anna) == D("150.00") and comments(h, deal) == []


def test_a_portal_too_busy_for_the_comment_still_settles_the_action_once(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    anna = customer(h)
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    client = h.services.bitrix24.client
    real = client.batch

    def busy(commands: Any, **options: Any) -> Any:
        if any(method == "crm.timeline.comment.add" for method, _ in commands.values()):
            raise RetriableCRMError("portal busy", code="QUERY_LIMIT_EXCEEDED")
        return real(commands, **options)

    monkeypatch.setattr(client, "batch", busy)
    rule(h, "bonus/review", deal)
    assert h.process()["done"] >= 1
    h.process()
    assert h.balance(anna) == D("150.00") and comments(h, deal) == []
    with h.services.db.transaction(write=False) as session:
        item = session.scalar(select(InboxEvent).where(InboxEvent.kind == "action:bonus:review"))
    assert item is not None and item.status == "done"


@pytest.mark.parametrize(("path", "status", "error"), [
    (f"/bitrix24/actions/{'Forged' + SECRET[6:]}/bonus/review?deal_id=1", 404, "not_found"),
    (f"/bitrix24/actions/{SECRET}/bonus/review?deal_id=x", 400, "invalid_action"),
    (f"/bitrix24/actions/{SECRET}/bonus/review", 400, "invalid_action"),
    (f"/bitrix24/actions/{SECRET}/refund?deal_id=1", 404, "unknown_action"),
    (f"/bitrix24/actions/{SECRET}/redeem/-5?deal_id=1", 404, "unknown_action"),
    (f"/bitrix24/actions/{SECRET}/bonus/{'x' * 52}?deal_id=1", 404, "unknown_action"),
], ids=["wrong-secret", "deal-not-a-number", "no-deal", "unknown-verb", "negative-points",
        "name-too-long"])
def test_refusals_say_why_and_store_nothing(h: Harness, path: str, status: int,
                                            error: str) -> None:
    response = h.web.get(path)
    assert (response.status_code, response.get_json()["error"]) == (status, error)
    assert response.get_json()["detail"]
    with h.services.db.transaction(write=False) as session:
        assert session.scalars(select(InboxEvent)).all() == []


def test_without_an_actions_secret_or_with_bitrix24_off_the_url_does_not_exist(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal) -> None:
    for bitrix24 in ({"actions_secret": None}, {"enabled": False, "actions_secret": SECRET}):
        services = fresh_services(b24_settings(tmp_path, database_url, portal, **bitrix24))
        client: FlaskClient = create_app(services=services).test_client()
        response = client.get(f"/bitrix24/actions/{SECRET}/accrue?deal_id=1")
        assert (response.status_code, response.get_json()["error"]) == (404, "not_found")
        services.close()
