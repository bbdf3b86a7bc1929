"""The durable inbox: stored once, leased to one worker, retried, parked, never lost."""

from __future__ import annotations

from datetime import timedelta

from connector.config import InboxSettings
from connector.db import Database
from connector.errors import RetriableCRMError
from connector.inbox import Inbox, InboxItem
from connector.worker import Outcome, Worker
from tests.conftest import Clock
from tests.test_concurrency import in_parallel


def make_inbox(db: Database, clock: Clock, **overrides: object) -> Inbox:
    return Inbox(db, InboxSettings.model_validate(
        {"max_attempts": 3, "retry_base_seconds": 10, **overrides}), clock=clock)


def put(inbox: Inbox, n: int) -> int:
    return inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key=f"evt:{n}",
                     body=b"event=ONCRMDEALUPDATE&data[FIELDS][ID]=" + str(n).encode(),
                     content_type="application/x-www-form-urlencoded", portal="acme").id


def test_duplicate_delivery_is_stored_once(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    first = inbox.put(source="amocrm", kind="leads", dedup_key="k", body=b"a")
    again = inbox.put(source="amocrm", kind="leads", dedup_key="k", body=b"a")
    assert (first.duplicate, again.duplicate, again.id) == (False, True, first.id)
    assert inbox.depth()["pending"] == 1


def test_claim_complete_and_skip(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    ids = [put(inbox, n) for n in range(3)]
    claimed = inbox.claim(2)
    assert [item.id for item in claimed] == ids[:2]
    assert claimed[0].body.endswith(b"=0") and claimed[0].attempts == 1
    assert [item.id for item in inbox.claim(10)] == ids[2:]  # leased items are not offered
    inbox.complete(ids[0])
    inbox.complete(ids[1], skipped_reason="deal has no contact")
    depth = inbox.depth()
    assert (depth["done"], depth["skipped"], depth["processing"]) == (1, 1, 1)
    item = inbox.get(ids[1])
    assert item is not None and item.last_error == "deal has no contact"


def test_failures_back_off_then_park_as_dead_and_can_be_retried(db: Database,
                                                               clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    item_id = put(inbox, 1)
    for attempt in (1, 2):
        assert [i.id for i in inbox.claim()] == [item_id]
        assert inbox.fail(item_id, f"portal answered 503 (attempt {attempt})") == "pending"
        assert inbox.claim() == []  # not before its backoff
        clock.advance(seconds=10 * 2 ** attempt)
    assert [i.id for i in inbox.claim()] == [item_id]
    assert inbox.fail(item_id, "still 503") == "dead"
    clock.advance(days=1)
    assert inbox.claim() == []
    assert [i.id for i in inbox.list(status="dead")] == [item_id]
    inbox.retry(item_id)
    assert [i.id for i in inbox.claim()] == [item_id]


def test_a_crashed_workers_lease_expires(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    item_id = put(inbox, 1)
    assert len(inbox.claim()) == 1
    clock.advance(seconds=inbox.lease.total_seconds() - 1)
    assert inbox.claim() == []  # the worker may still be at it
    clock.advance(seconds=2)
    reclaimed = inbox.claim()
    assert [i.id for i in reclaimed] == [item_id] and reclaimed[0].attempts == 2


def test_backoff_grows_and_is_capped(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock, retry_max_seconds=60)
    assert timedelta(seconds=5) <= inbox.backoff(1) <= timedelta(seconds=10)
    assert timedelta(seconds=20) <= inbox.backoff(3) <= timedelta(seconds=40)
    assert inbox.backoff(30) <= timedelta(seconds=60)


def test_parallel_workers_never_share_an_item(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    ids = {put(inbox, n) for n in range(60)}
    batches = in_parallel(6, lambda _: inbox.claim(10))
    seen = [item.id for batch in batches if isinstance(batch, list) for item in batch]
    assert all(isinstance(batch, list) for batch in batches), batches
    assert sorted(seen) == sorted(ids)  # each item exactly once


class Unreachable:
    """A CRM that stays down through the client's retries (each group costs minutes)."""

    def __init__(self) -> None:
        self.groups = 0

    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        self.groups += 1
        raise RetriableCRMError("batch: cannot reach the portal (ConnectionError)",
                                code="CONNECTION")


def test_a_pass_stops_at_the_first_group_the_crm_could_not_take(db: Database,
                                                                  clock: Clock) -> None:
    inbox = make_inbox(db, clock, batch_size=5)
    for n in range(20):
        put(inbox, n)
    crm = Unreachable()
    worker = Worker(inbox, {"bitrix24": crm})
    assert worker.drain() == {"failed": 5}
    assert crm.groups == 1 and worker.crm_unreachable
    assert inbox.depth()["pending"] == 20  # nothing lost: the five come back with backoff


def test_wake_deferred_makes_only_items_waiting_on_credentials_due(db: Database,
                                                                  clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    ids = {name: inbox.put(source=source, kind="leads", dedup_key=name, body=b"x",
                           portal=portal).id
           for name, source, portal in [("revoked", "amocrm", "a.amocrm.ru"),
                                        ("failing", "amocrm", "a.amocrm.ru"),
                                        ("other-account", "amocrm", "b.amocrm.ru"),
                                        ("other-crm", "bitrix24", "a.amocrm.ru")]}
    assert len(inbox.claim(10)) == 4
    for name in ("revoked", "other-account", "other-crm"):
        inbox.defer(ids[name], "credentials revoked", timedelta(minutes=5))
    inbox.fail(ids["failing"], "portal answered 503")
    assert inbox.claim(10) == []
    assert inbox.wake_deferred("amocrm", "a.amocrm.ru") == 1
    [woken] = inbox.claim(10)
    assert woken.id == ids["revoked"] and woken.attempts == 1  # the deferral cost no attempt
    inbox.fail(woken.id, "portal answered 503")  # claimed again: no longer deferred
    assert inbox.wake_deferred("amocrm", "a.amocrm.ru") == 0
    clock.advance(minutes=5)  # the others wait out their own delay
    assert {ids["other-account"], ids["other-crm"]} <= {item.id for item in inbox.claim(10)}


class StoppedMidPass:
    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        raise SystemExit(0)  # what SIGTERM raises in `worker` (systemctl stop, a deploy)


def test_a_worker_stopped_mid_pass_gives_its_claims_back(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock, batch_size=5)
    for n in range(3):
        put(inbox, n)
    worker = Worker(inbox, {"bitrix24": StoppedMidPass()})
    try:
        worker.drain_once()
    except SystemExit:
        pass
    else:
        raise AssertionError("the stop must go on to end the process")
    # Due again now, for the next worker: not held for the whole lease (15 minutes).
    assert [item.id for item in inbox.claim(None)] != []


class Settles:
    """Done for each item."""

    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        return {item.id: Outcome.done() for item in items}


def test_the_write_back_runs_before_the_last_group_is_settled(db: Database,
                                                              clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    ids = [put(inbox, n) for n in range(3)]
    seen: list[list[str]] = []

    def write_back() -> None:  # the CRM's field is written while the items are still claimed
        seen.append([inbox.get(i).status for i in ids])  # type: ignore[union-attr]

    worker = Worker(inbox, {"bitrix24": Settles()}, write_back=write_back)
    inbox.stored.clear()  # as the worker's loop does before a pass
    assert worker.drain() == {"done": 3}
    assert seen == [["processing"] * 3]
    assert worker.written_back
    assert [inbox.get(i).status for i in ids] == ["done"] * 3  # type: ignore[union-attr]


def test_a_failed_write_back_leaves_the_items_settled_and_is_reported(
        db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock)
    item_id = put(inbox, 1)

    def write_back() -> None:
        raise ValueError("the CRM refused the batch")

    worker = Worker(inbox, {"bitrix24": Settles()}, write_back=write_back)
    assert worker.drain() == {"done": 1}
    assert isinstance(worker.write_back_error, ValueError)
    assert inbox.get(item_id).status == "done"  # type: ignore[union-attr]


def test_a_full_group_is_followed_by_another_claim_before_any_write_back(
        db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock, batch_size=2)
    ids = [put(inbox, n) for n in range(3)]
    calls: list[list[str]] = []

    def write_back() -> None:
        calls.append([inbox.get(i).status for i in ids])  # type: ignore[union-attr]

    inbox.stored.clear()
    worker = Worker(inbox, {"bitrix24": Settles()}, write_back=write_back)
    assert worker.drain() == {"done": 3}
    # Once, after the last (short) group: the first two settled, the third still claimed.
    assert calls == [["done", "done", "processing"]]
