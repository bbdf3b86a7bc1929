"""The card page's URL in the CRM's card_url contact field, both CRMs: written with the
account's other fields, written again (alone) after a rotation or `publish`, and cleared
never while card pages are on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.config import Settings
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM
from tests import test_amocrm_e2e as amo_e2e
from tests import test_bitrix24_e2e as b24_e2e
from tests.conftest import Clock, fresh_services, make_settings

pytestmark = pytest.mark.storage

SECRET = "card-secret-0123456789abcdefghijklmnop"
PUBLIC = "https://loyalty.example.com"
CARD = {"secret": SECRET}


def with_cards(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "card": make_settings(Path("."), card=CARD).card,
        "server": settings.server.model_copy(update={"public_url": PUBLIC})})


@pytest.fixture
def b24(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[b24_e2e.Harness]:
    time = ManualClock()
    with FakeBitrix24Portal(clock=time) as portal:
        for event in b24_e2e.EVENTS:
            if not event.startswith("ONAPP"):
                portal.bind_event(event, b24_e2e.EVENTS_URL)
        settings = with_cards(b24_e2e.b24_settings(tmp_path, database_url, portal))
        services = fresh_services(settings, clock=clock)
        harness = b24_e2e.Harness(portal, services, time, clock)
        harness.connector.installer.install()
        yield harness
        services.close()


def test_bitrix24_contacts_get_their_card_url_and_a_new_one_after_rotation(
        b24: b24_e2e.Harness) -> None:
    field = b24.services.settings.bitrix24.fields["card_url"]
    created = b24.portal.store.userfield_named(field, "CRM_CONTACT")
    assert created is not None and created["USER_TYPE_ID"] == "url"
    anna = b24.portal.add_contact(NAME="Anna")
    b24.won(anna, "1000.00")
    b24.process()
    url = b24.field(anna, "card_url")
    assert url and url.startswith(f"{PUBLIC}/card/")
    assert b24.services.cards.find(url.rsplit("/", 1)[1]) is not None
    assert len(b24.writes(anna)) == 1 and field in b24.writes(anna)[0]

    new = b24.services.cards.rotate(b24.ref(anna))
    b24.process()
    assert b24.writes(anna)[-1] == {field: new.url}  # only the link changed
    assert b24.field(anna, "card_url") == new.url
    assert b24.services.cards.find(url.rsplit("/", 1)[1]) is None
    b24.process()
    assert len(b24.writes(anna)) == 2


@pytest.fixture
def amo(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[amo_e2e.Harness]:
    time = ManualClock()
    with FakeAmoCRM(clock=time) as account:
        settings = with_cards(amo_e2e.amo_settings(tmp_path, database_url, account))
        services = fresh_services(settings, clock=clock)
        yield amo_e2e.Harness(account, services, time, clock)
        services.close()


def test_amocrm_contacts_get_their_card_url_and_publish_rewrites_only_it(
        amo: amo_e2e.Harness) -> None:
    amo.account.put_contact(10971465)
    amo.account.put_lead(1, contact=10971465, price=1000)
    amo.hook("leads", "status", amo_e2e.status(1))
    amo.process()
    patches = amo.account.state.contact_patches
    sent = {v["field_code"]: v["values"] for v in patches[-1][0]["custom_fields_values"]}
    url = sent["LOYALTY_CARD_URL"][0]["value"]
    assert url.startswith(f"{PUBLIC}/card/")
    assert amo.services.cards.link(amo_e2e.ANNA).url == url  # the same link, no new write
    amo.process()
    assert len(patches) == 1

    # A new secret: every link is dead; publish issues new ones and write-back sends them.
    changed = amo.services.settings.model_copy(update={
        "card": make_settings(Path("."), card={"secret": SECRET[::-1]}).card})
    amo.services.cards.settings = changed.card
    assert amo.services.cards.publish("amocrm", amo_e2e.PORTAL) == 1
    amo.process()
    assert len(patches) == 2
    [[written]] = [patches[-1]]
    assert [v["field_code"] for v in written["custom_fields_values"]] == ["LOYALTY_CARD_URL"]
    assert written["custom_fields_values"][0]["values"][0]["value"] != url


def test_install_creates_the_card_url_fields_as_urls() -> None:
    from connector.amocrm.install import FIELD_TYPES as AMO
    from connector.bitrix24.install import FIELD_TYPES as B24

    assert B24["card_url"][0] == "url" and AMO["card_url"][0] == "url"
