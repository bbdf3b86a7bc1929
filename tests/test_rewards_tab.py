"""A manager claims a reward from the Bitrix24 CRM tab's signed form, against the fake
portal."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.triggers import REWARD_CLAIMED
from tests.conftest import Clock
from tests.test_bitrix24_e2e import Harness, app_harness
from tests.test_bitrix24_tab import CONTACT_TAB, form_token, open_tab, refusal, send


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(clock=ManualClock()) as fake:
        yield fake


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
      clock: Clock) -> Iterator[Harness]:
    harness = app_harness(tmp_path, database_url, portal, portal.clock, clock,
                          language="en")  # the wording read here is English
    harness.connector.installer.install()  # the tabs among the rest
    yield harness
    harness.services.close()


def test_a_manager_claims_a_reward_from_the_tab_once_per_form(h: Harness) -> None:
    h.services.rewards.create({"id": "mug", "name": "Branded mug", "cost": "60", "stock": 3})
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="10.00")
    h.services.ledger.adjust(h.ref(anna), D("100"), key="seed", reason="test funds")
    html = open_tab(h, CONTACT_TAB, anna).get_data(as_text=True)
    assert '<option value="mug">Branded mug — 60\u00a0points</option>' in html
    token = form_token(html, "reward")
    claimed = h.web.post("/bitrix24/tab/reward", data={"form": token, "reward": "mug"})
    assert claimed.status_code == 200
    [claim] = h.services.claims.list()
    assert claim.via == "bitrix24:tab" and claim.ref == h.ref(anna)
    assert f"Branded mug claimed: code {claim.code}, 60\u00a0points; balance 40" in \
        claimed.get_data(as_text=True)
    again = h.web.post("/bitrix24/tab/reward", data={"form": token, "reward": "mug"})
    assert "already sent: applied once" in again.get_data(as_text=True)
    assert h.balance(anna) == D("40.00") and len(h.services.claims.list()) == 1
    poor = h.web.post("/bitrix24/tab/reward", data={
        "form": form_token(again.get_data(as_text=True), "reward"), "reward": "mug"})
    assert poor.status_code == 409 and "are spendable" in poor.get_data(as_text=True)
    # A reward form cannot change a balance, nor a bonus form claim.
    refusal(send(h, token, "10", "x"), 403, "forbidden")
    bonus = form_token(html, "grant")
    refusal(h.web.post("/bitrix24/tab/reward", data={"form": bonus, "reward": "mug"}), 403,
            "forbidden")
    assert h.balance(anna) == D("40.00")
    h.process()  # the app's trigger runs on the contact's deal: staff hand the mug over
    assert [(t["code"], t["owner_id"]) for t in h.portal.fired_triggers
            if t["code"] == REWARD_CLAIMED] == [(REWARD_CLAIMED, deal)]
