"""Write-back claims its contacts: however many workers flush at once, each change is written
once (mirror.claim), and a claim whose worker died runs out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from connector import mirror
from connector.crm.models import ContactMirror
from connector.sandbox import FakeBitrix24Portal
from connector.sandbox.amocrm import FakeAmoCRM
from connector.services import Services
from tests.conftest import fresh_services, make_settings

pytestmark = pytest.mark.storage
PORTAL = "acme.bitrix24.ru"
CONTACTS = 120  # more than two batches of 50


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    # Enterprise limits, so the test is about claims, not waits.
    with FakeBitrix24Portal(requests_per_second=50, burst=250) as fake:
        yield fake


def _workers(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
             count: int) -> list[Services]:
    settings = make_settings(tmp_path, database_url, bitrix24={
        "enabled": True, "webhook_url": portal.webhook_url, "portal": PORTAL,
        "application_token": portal.application_token, "requests_per_second": 50,
        "burst": 250})
    first = fresh_services(settings)
    return [first, *(Services.build(settings) for _ in range(count - 1))]


def _dirty_contacts(services: Services, portal: FakeBitrix24Portal) -> list[int]:
    """CONTACTS accounts with a purchase each, processed but not yet written back."""
    assert services.bitrix24 is not None
    services.bitrix24.installer.install()
    contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(CONTACTS)]
    for n, contact in enumerate(contacts):
        deal = portal.add_deal(contact_ids=[contact], STAGE_ID="WON",
                               OPPORTUNITY=f"{1000 + n}.00")
        body, kind = portal.event_body("ONCRMDEALUPDATE", deal)
        services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key=f"e{n}",
                           body=body, content_type=kind, portal=portal.domain)
    from connector.worker import Worker

    counts = Worker(services.inbox, services.processors()).drain()
    assert counts == {"done": CONTACTS}
    return contacts


def test_two_workers_flushing_at_once_write_each_contact_once(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal) -> None:
    workers = _workers(tmp_path, database_url, portal, 2)
    try:
        contacts = _dirty_contacts(workers[0], portal)
        barrier = threading.Barrier(len(workers))
        written: list[int] = []
        errors: list[BaseException] = []

        def flush(services: Services) -> None:
            try:
                assert services.bitrix24 is not None
                barrier.wait()
                written.append(services.bitrix24.writeback.flush().contacts_written)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=flush, args=(s,)) for s in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert sum(written) == CONTACTS
        assert all(written), written  # both took a share
        updates = portal.contact_updates
        assert sorted(updates) == sorted(contacts)
        assert {contact: len(updates[contact]) for contact in contacts} == \
            dict.fromkeys(contacts, 1)
        with workers[0].db.transaction(write=False) as session:
            claims = session.execute(select(ContactMirror.claimed_by,
                                            ContactMirror.claimed_until)).all()
        assert set(claims) == {(None, None)}  # every claim ended with its write
    finally:
        for services in workers:
            services.close()


def test_a_claim_holds_off_other_workers_until_it_runs_out(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal) -> None:
    workers = _workers(tmp_path, database_url, portal, 2)
    try:
        _dirty_contacts(workers[0], portal)
        now = workers[0].ledger.clock()
        hold = timedelta(minutes=15)
        first = mirror.claim(workers[0].db, "bitrix24", PORTAL, 80, owner="dead-worker",
                             now=now, hold=hold)
        second = mirror.claim(workers[1].db, "bitrix24", PORTAL, 80, owner="other",
                              now=now, hold=2 * hold)
        assert (len(first), len(second)) == (80, CONTACTS - 80)
        assert not {d.account_id for d in first} & {d.account_id for d in second}
        assert mirror.claim(workers[1].db, "bitrix24", PORTAL, 80, owner="other", now=now,
                            hold=hold) == []
        # The first worker died: its contacts are offered again once its claim ran out.
        later = now + hold + timedelta(seconds=1)
        again = mirror.claim(workers[1].db, "bitrix24", PORTAL, 200, owner="other",
                             now=later, hold=hold)
        assert sorted(d.account_id for d in again) == sorted(d.account_id for d in first)
        # A released claim (a failed call) is offered at once.
        mirror.release(workers[1].db, second)
        assert len(mirror.claim(workers[0].db, "bitrix24", PORTAL, 200, owner="third",
                                now=later, hold=hold)) == CONTACTS - 80
    finally:
        for services in workers:
            services.close()


def test_amocrm_write_back_claims_too(tmp_path: Path, database_url: str) -> None:
    with FakeAmoCRM(rate=50, burst=50) as account:
        settings = make_settings(tmp_path, database_url, amocrm={
            "enabled": True, "base_url": account.base_url,
            "long_lived_token": "long-lived-token", "requests_per_second": 50, "burst": 50,
            "webhook_secret": "ClaimsSecret0123456789",
            "write_batch": 10})
        services = fresh_services(settings)
        other = Services.build(settings)
        try:
            assert services.amocrm is not None and other.amocrm is not None
            services.amocrm.installer.install()
            for lead in range(1, 31):
                account.put_contact(lead)
                account.put_lead(lead, contact=lead, price=1000 + lead)
            services.amocrm.reconcile(full=True)
            # Another worker holds ten of the thirty dirty contacts.
            held = mirror.claim(other.db, "amocrm", settings.amocrm.portal_key, 10,
                                owner="other", now=services.ledger.clock(),
                                hold=timedelta(minutes=15))
            report = services.amocrm.writeback.flush()
            assert (report.contacts_written, report.calls) == (20, 2)
            patched = [int(c["id"]) for patch in account.state.contact_patches for c in patch]
            assert len(patched) == len(set(patched)) == 20
            assert not set(patched) & {int(d.contact_id) for d in held}
        finally:
            services.close()
            other.close()
