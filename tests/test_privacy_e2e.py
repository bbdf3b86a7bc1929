"""A contact deleted in the CRM is erased when `privacy.erase_on_contact_delete` is on:
Bitrix24's ONCRMCONTACTDELETE, amoCRM's contacts[delete] webhook, through the receivers and
the worker against the fake CRMs. Off (the default), the account stays as it was."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.amocrm.install import AmoCRMInstaller
from connector.config import Settings
from connector.inbox import InboxEvent
from connector.ledger.models import Account
from connector.privacy.models import Erasure
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM
from connector.services import Services
from tests.conftest import Clock, fresh_services
from tests.test_amocrm_e2e import ANNA as AMO_ANNA
from tests.test_amocrm_e2e import Harness as AmoHarness
from tests.test_amocrm_e2e import amo_settings, status
from tests.test_bitrix24_e2e import Harness as B24Harness
from tests.test_bitrix24_e2e import b24_settings, bind_events

pytestmark = pytest.mark.storage


def erasing(settings: Settings, on: bool) -> Settings:
    return settings.model_copy(update={"privacy": settings.privacy.model_copy(
        update={"erase_on_contact_delete": on})})


def erased(services: Services) -> list[Account]:
    with services.db.transaction(write=False) as session:
        return list(session.scalars(select(Account).where(Account.contact_id.like("erased-%"))))


@pytest.fixture
def portal(portal: FakeBitrix24Portal) -> FakeBitrix24Portal:
    return bind_events(portal)


@pytest.mark.parametrize("on", [True, False])
def test_bitrix24_contact_deleted(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
                                  time: ManualClock, clock: Clock, on: bool) -> None:
    services = fresh_services(erasing(b24_settings(tmp_path, database_url, portal), on),
                              clock=clock)
    h = B24Harness(portal, services, time, clock)
    h.connector.installer.install()
    anna = portal.add_contact(NAME="Anna", BIRTHDATE="1990-05-17")
    deal = h.won(anna, "10000.00")
    h.process()
    assert h.balance(anna) == D("400.00")
    portal.delete_contact(anna)
    portal.update_deal(deal, OPPORTUNITY="10000.00")  # the deal now names nobody
    counts = h.process()
    if not on:
        assert h.balance(anna) == D("100.00")  # as before: the purchase is taken back
        assert erased(services) == []
        services.close()
        return
    [account] = erased(services)
    assert account.balance == 40000 and account.birthday is None and account.card_number is None
    assert services.ledger.account_id(h.ref(anna)) is None
    assert services.ledger.verify()[1] == []
    with services.db.transaction(write=False) as session:
        [log] = session.scalars(select(Erasure))
        assert (log.erased_by, log.reason) == ("bitrix24:ONCRMCONTACTDELETE",
                                              "contact deleted in Bitrix24")
        kinds = {e.kind: e for e in session.scalars(select(InboxEvent))
                 if e.kind.startswith("ONCRMCONTACT")}
        assert kinds["ONCRMCONTACTDELETE"].status == "done"
        assert all(e.body == b"" for e in kinds.values())
    assert counts.get("failed", 0) == 0
    services.close()


@pytest.mark.parametrize("on", [True, False])
def test_amocrm_contact_deleted(tmp_path: Path, database_url: str, account: FakeAmoCRM,
                                time: ManualClock, clock: Clock, on: bool) -> None:
    services = fresh_services(erasing(amo_settings(tmp_path, database_url, account), on),
                              clock=clock)
    h = AmoHarness(account, services, time, clock)
    installer = AmoCRMInstaller(services, h.client)
    installer.install()
    [hook] = account.state.webhooks
    assert ("delete_contact" in hook["settings"]) is on
    account.put_contact(10971465)
    account.put_lead(1, contact=10971465, price=40000)
    assert h.hook("contacts", "add", {"id": "10971465", "name": "Anna Pavlova",
                                      "type": "contact"}) == 200
    assert h.hook("leads", "status", status(1)) == 200
    h.process()
    assert h.balance() == D("1300.00")
    assert h.hook("contacts", "delete", {"id": "10971465", "type": "contact"}) == 200
    h.process()
    if not on:
        assert h.balance() == D("1300.00") and erased(services) == []
        services.close()
        return
    [gone] = erased(services)
    assert gone.balance == 130000
    assert services.ledger.account_id(AMO_ANNA) is None
    with services.db.transaction(write=False) as session:
        bodies = [e.body for e in session.scalars(select(InboxEvent))]
    assert bodies == [b"", b"", b""]
    services.close()
