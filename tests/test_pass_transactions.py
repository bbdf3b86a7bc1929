"""How many database transactions the inbox worker's pass over one event takes: a count, not
a timing, so the bookkeeping between an event and its CRM write cannot silently grow back.

Under load every transaction costs a scheduling round (PostgreSQL is another process) and a
commit; `benchmarks/latency.py` showed them to be most of the time between the deal's read
and the contact's write. Counted here on the pass `serve` and `worker` run (run_job of
process_inbox), after a first pass that made the portal's budget row and the job's record.

If a change needs one more transaction on this path, say why in its commit and raise the
figure; if it saves one, lower it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.sandbox import FakeBitrix24Portal
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.scheduler import find_job, run_job
from connector.services import Services
from tests.conftest import fresh_services, make_settings
from tests.db_count import Seen, counting
from webhooks import create_app

AMO_SECRET = "PassCountSecret0123456789"

# Transactions on the database's own engine. SQLite also runs the CRM budget's reservations
# on it (one per CRM request); PostgreSQL runs them on an autocommit engine of their own.
# "before": those that begin before the contact's write (what the manager waits for).
# Before: 13 before the write / 19 in all for a Bitrix24 deal on SQLite, 11 / 17 on
# PostgreSQL; a robot call 4 / 9 and 2 / 7; an amoCRM lead 13 / 20 and 11 / 17. Since: a
# group's items are settled in one transaction, after the write-back; claims known to come
# back empty are not made; a deal's triggers and latest-deal note are one transaction; the
# write-back marks a batch written at once and, on PostgreSQL, reads the accounts' views
# with its claim (SQLite's claim holds the one write lock: the views are read after it).
# Then a deal 8 / 13 on SQLite and 5 / 10 on PostgreSQL, a lead 8 / 15 and 5 / 11. Since:
# settle_purchase settles a deal no one else holds in its write transaction alone (no read
# transaction for its holders first).
EXPECTED = {
    "bitrix24 deal": {"sqlite": {"before": 7, "all": 12},
                      "postgresql": {"before": 4, "all": 9}},
    "bitrix24 robot": {"sqlite": {"before": 4, "all": 8},
                       "postgresql": {"before": 2, "all": 6}},
    "amocrm lead": {"sqlite": {"before": 7, "all": 14},
                    "postgresql": {"before": 4, "all": 10}},
}


@pytest.fixture
def b24(tmp_path: Path, database_url: str) -> Iterator[tuple[Services, FakeBitrix24Portal]]:
    with FakeBitrix24Portal() as portal:  # the real clock: its calls are timed like ours
        settings = make_settings(tmp_path, database_url, scheduler={"enabled": False},
                                 bitrix24={"enabled": True, "webhook_url": portal.webhook_url,
                                           "portal": portal.url,
                                           "application_token": portal.application_token,
                                           "member_id": portal.member_id})
        services = fresh_services(settings)
        assert services.bitrix24 is not None
        services.bitrix24.installer.install()
        try:
            yield services, portal
        finally:
            services.close()


def one_pass(services: Services, post: Any) -> Seen:
    """A warm-up pass over one event, then the counted pass over another."""
    job = find_job(services.settings, "process_inbox")
    assert job is not None
    # As the worker's loop does before each pass: the pass's claim sees what rang so far.
    post(0)
    services.inbox.stored.clear()
    assert settled(run_job(services, job)) == 1
    post(1)
    services.inbox.stored.clear()
    with counting(services.db.engine) as seen:
        counts = run_job(services, job)
    assert settled(counts) == 1, counts
    return seen


def settled(counts: dict[str, Any]) -> int:
    """Items done, or skipped as answered (a robot call's outcome)."""
    return int(counts.get("done", 0)) + int(counts.get("skipped", 0))


def check(seen: Seen, written_at: float, expected: dict[str, int]) -> None:
    found = {"before": seen.transactions_before(written_at), "all": seen.transactions}
    assert found == expected, seen.show()


@pytest.mark.parametrize("kind", ["deal", "robot"])
def test_bitrix24_one_event_pass(b24: tuple[Services, FakeBitrix24Portal], kind: str,
                                 database_url: str) -> None:
    services, portal = b24
    web = create_app(services=services).test_client()
    contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(2)]
    deals = [portal.add_deal(contact_ids=[contacts[n]], STAGE_ID="WON", OPPORTUNITY="1000.00")
             for n in range(2)]

    def post(n: int) -> None:
        if kind == "robot":
            body, content_type = portal.robot_body("loyalty_balance", f"DEAL_{deals[n]}", {})
            path = "/bitrix24/robots"
        else:
            body, content_type = portal.event_body("ONCRMDEALUPDATE", deals[n])
            path = "/bitrix24/events"
        assert web.post(path, data=body, content_type=content_type).status_code == 200

    seen = one_pass(services, post)
    method = "bizproc.event.send" if kind == "robot" else "crm.contact.update"
    writes = [c.at for c in portal.calls if c.method == method]
    assert len(writes) == 2  # one a pass
    if kind == "deal":
        assert str(portal.contact(contacts[1]).get(
            services.settings.bitrix24.fields["balance"])) not in ("", "None", "0")
    dialect = "postgresql" if services.db.is_postgres else "sqlite"
    check(seen, writes[-1], EXPECTED[f"bitrix24 {kind}"][dialect])


def test_amocrm_one_event_pass(tmp_path: Path, database_url: str) -> None:
    with FakeAmoCRM() as account:
        for n in (1, 2):
            account.put_contact(n)
            account.put_lead(n, contact=n, price=1000)
        settings = make_settings(tmp_path, database_url, scheduler={"enabled": False},
                                 amocrm={"enabled": True, "base_url": account.base_url,
                                         "subdomain": "example",
                                         "long_lived_token": "long-lived-token",
                                         "webhook_secret": AMO_SECRET})
        services = fresh_services(settings)
        try:
            assert services.amocrm is not None
            services.amocrm.installer.install()
            web = create_app(services=services).test_client()

            def post(n: int) -> None:
                body = webhook_body("leads", "status", [{
                    "id": str(n + 1), "status_id": "142", "old_status_id": "20067736",
                    "pipeline_id": "3104455", "price": "0"}])
                assert web.post(f"/amocrm/webhooks/{AMO_SECRET}", data=body,
                                content_type="application/x-www-form-urlencoded",
                                headers={"X-Amocrm-Requestid": f"pass{n}"}).status_code == 200

            seen = one_pass(services, post)
            patched = account.state.contact_patched_at
            assert len(patched) == 2
            dialect = "postgresql" if services.db.is_postgres else "sqlite"
            check(seen, patched[-1], EXPECTED["amocrm lead"][dialect])
        finally:
            services.close()


def test_only_bookkeeping_skips_the_wal_flush(b24: tuple[Services, FakeBitrix24Portal],
                                              database_url: str) -> None:
    """On PostgreSQL the claims, the inbox's outcomes, the write-back's marks and the job's
    record commit without waiting for the WAL flush (lost with the server, they are work
    done again); the ledger's entries and the triggers owed to marketing wait for it."""
    services, portal = b24
    if not services.db.is_postgres:
        pytest.skip("SQLite commits without a flush already")
    web = create_app(services=services).test_client()
    contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(2)]
    deals = [portal.add_deal(contact_ids=[contacts[n]], STAGE_ID="WON", OPPORTUNITY="1000.00")
             for n in range(2)]

    def post(n: int) -> None:
        body, content_type = portal.event_body("ONCRMDEALUPDATE", deals[n])
        assert web.post("/bitrix24/events", data=body,
                        content_type=content_type).status_code == 200

    seen = one_pass(services, post)
    fast = [group for group in seen.grouped
            if group and "synchronous_commit" in group[0]]
    durable = [group for group in seen.grouped if group not in fast]

    def writes(groups: list[list[str]], table: str) -> int:
        return sum(1 for group in groups for statement in group
                   if statement.startswith(("INSERT", "UPDATE")) and table in statement)

    assert writes(durable, "INTO entries") == 1
    assert writes(durable, "INTO trigger_events") == 1
    assert writes(fast, "entries") == writes(fast, "trigger_events") == 0
    assert writes(fast, "inbox_events") == 2  # the claim and the outcome
    assert writes(fast, "contact_mirror") >= 2  # the write-back's claim and its mark
    assert writes(fast, "job_runs") == 1
