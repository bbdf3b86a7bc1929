"""Lists read 50 pages to a request: fast-method pages chained inside `batch` by `$result`
references, against the fake portal (its leaky bucket and operating-time meter on)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from connector.config import Bitrix24Settings
from connector.crm.bitrix24 import Bitrix24Client
from connector.crm.limiter import LeakyBucket
from connector.errors import FatalCRMError
from connector.sandbox import FakeBitrix24Portal, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def portal(clock: ManualClock) -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(clock=clock, requests_per_second=2, burst=50) as fake:
        yield fake


def client_for(portal: FakeBitrix24Portal, clock: ManualClock, **settings: object
               ) -> Bitrix24Client:
    config = Bitrix24Settings.model_validate({"webhook_url": portal.webhook_url,
                                              "max_retries": 3, **settings})
    limiter = LeakyBucket.under(2, 50, clock=clock.monotonic, sleep=clock.sleep)
    return Bitrix24Client(config, limiter=limiter, sleep=clock.sleep, clock=clock.time)


def expected_requests(rows: int) -> int:
    """Batches of 50 pages: the first page counts the rows, so the last batch is known."""
    return max(1, math.ceil(rows / 2500))


@pytest.mark.parametrize("rows", [0, 1, 49, 50, 51, 2500, 2501, 5000])
def test_the_chained_list_returns_exactly_every_row(
        portal: FakeBitrix24Portal, clock: ManualClock, rows: int) -> None:
    won = []
    for n in range(rows + rows // 3):
        if n % 4 == 3:  # deals the filter leaves out, between the listed ones
            portal.add_deal(STAGE_ID="LOSE", OPPORTUNITY="10.00")
        else:
            won.append(str(portal.add_deal(STAGE_ID="WON", OPPORTUNITY="10.00")))
    won = won[:rows] if len(won) >= rows else won
    client = client_for(portal, clock)
    before = portal.http_requests

    got = [deal["ID"] for deal in client.list_all(
        "crm.deal.list", filter={"STAGE_ID": "WON"}, select=["ID", "STAGE_ID"])]

    assert got == won  # every row once, in ID order
    assert portal.http_requests - before == expected_requests(len(won))
    assert portal.limit_errors == 0


def test_a_row_that_starts_to_match_during_the_read_pushes_none_out(
        portal: FakeBitrix24Portal, clock: ManualClock) -> None:
    # The first page counts 2,600 rows; once the first request (2,500 of them) is read, a
    # deal further on starts to match. The rows still to read are then 101, not 100: a
    # read that ended at the count would leave out the last deal, which never changed.
    won = [str(portal.add_deal(STAGE_ID="WON", OPPORTUNITY="10.00")) for _ in range(2550)]
    late = portal.add_deal(STAGE_ID="LOSE", OPPORTUNITY="10.00")
    won += [str(portal.add_deal(STAGE_ID="WON", OPPORTUNITY="10.00")) for _ in range(50)]
    client = client_for(portal, clock)
    rows = client.list_all("crm.deal.list", filter={"STAGE_ID": "WON"}, select=["ID"])
    got = [next(rows)["ID"]]
    portal.update_deal(late, STAGE_ID="WON")
    got += [deal["ID"] for deal in rows]
    assert got == sorted([*won, str(late)], key=int)


def test_5000_rows_take_two_requests_the_floor(portal: FakeBitrix24Portal,
                                              clock: ManualClock) -> None:
    for _ in range(5000):
        portal.add_deal(STAGE_ID="WON")
    client = client_for(portal, clock)
    totals: list[int] = []
    assert sum(1 for _ in client.list_all("crm.deal.list", on_total=totals.append)) == 5000
    assert totals == [5000]  # counted once, by the first page (start=0)
    assert portal.http_requests == 2 and client.calls == 2  # the peers take 3
    listed = [c for c in portal.calls if c.method == "crm.deal.list"]
    assert [c.params["start"] for c in listed[:2]] == ["0", "-1"] and len(listed) == 100
    assert all(c.status == 200 for c in listed)  # the count says where the end is


def test_commands_past_the_end_come_back_as_errors_and_are_not_read(
        portal: FakeBitrix24Portal, clock: ManualClock) -> None:
    for _ in range(70):
        portal.add_deal(STAGE_ID="WON")
    client = client_for(portal, clock)
    got = [deal["ID"] for deal in client.list_all("crm.deal.list")]
    assert len(got) == 70 and len(set(got)) == 70
    listed = [c for c in portal.calls if c.method == "crm.deal.list"]
    # p0 (rows 1-50) and p1 (51-70) answer; p2 references $result[p1][49][ID], row 49 of a
    # page of 20, and is refused; halt=1 stops the chain there.
    assert [(c.batch, c.status) for c in listed] == [("p0", 200), ("p1", 200), ("p2", 400)]
    assert portal.http_requests == 1


def test_an_error_mid_batch_resumes_after_the_last_row_read(
        portal: FakeBitrix24Portal, clock: ManualClock) -> None:
    for _ in range(3000):
        portal.add_deal(STAGE_ID="WON")
    client = client_for(portal, clock)
    # 10 pages pass, the 11th command fails
    portal.fail_next(1, 500, method="crm.deal.list", after=10)
    got = [int(deal["ID"]) for deal in client.list_all("crm.deal.list")]
    assert got == sorted(portal.store.deals)
    failed = [c for c in portal.calls if c.method == "crm.deal.list" and c.status == 500]
    assert [c.batch for c in failed] == ["p10"]
    # the broken chain (10 pages: 500 rows), 2,500 rows in the next, the last 0 in a third
    # (3,000 is not reached: 500 + 2,500 = 3,000, so two suffice)
    assert portal.http_requests == 2


def test_a_failing_first_page_of_a_chain_is_repeated(
        portal: FakeBitrix24Portal, clock: ManualClock) -> None:
    for _ in range(100):
        portal.add_deal(STAGE_ID="WON")
    client = client_for(portal, clock)
    portal.fail_next(2, 500, method="crm.deal.list", after=1)
    got = [deal["ID"] for deal in client.list_all("crm.deal.list")]
    assert len(got) == 100
    failed = [c.batch for c in portal.calls if c.status == 500]
    assert failed == ["p1", "p0"]  # mid-chain, then the first page of the next chain
    assert portal.http_requests == 3  # the chain broken at p1, the failed one, the one that ran


def test_a_refused_first_page_of_a_chain_raises(portal: FakeBitrix24Portal,
                                                clock: ManualClock) -> None:
    for _ in range(60):
        portal.add_deal(STAGE_ID="WON")
    client = client_for(portal, clock)
    portal.fail_next(1, 400, "ACCESS_DENIED", "Access denied.", method="crm.deal.list")
    rows = client.list_all("crm.deal.list")
    with pytest.raises(FatalCRMError, match="ACCESS_DENIED"):
        list(rows)
    assert portal.http_requests == 1


def test_the_client_waits_for_operating_reset_before_the_method_is_blocked(
        portal: FakeBitrix24Portal, clock: ManualClock) -> None:
    for _ in range(5000):
        portal.add_deal(STAGE_ID="WON")
    portal.operating.costs["crm.deal.list"] = 6.0  # each page "takes" 6 s on the portal
    client = client_for(portal, clock)
    start = clock.time()
    got = [deal["ID"] for deal in client.list_all("crm.deal.list")]
    assert len(got) == 5000
    blocked = [c for c in portal.calls if c.status == 429]
    assert blocked == []  # never OPERATION_TIME_LIMIT
    # 50 pages 300 s, then a chain of the 30 pages (180 s) that still fit in 480 s; then
    # it waited for the oldest minute of the window to drop out (operating_reset_at, 600 s
    # after the start) before the last 20 pages
    assert clock.time() - start >= 600
    assert portal.http_requests == 3
    sizes = [len(c.params["cmd"]) for c in portal.calls if c.method == "batch"]
    assert sizes == [50, 30, 50]


def test_a_method_blocked_mid_batch_is_waited_for_and_resumed(
        portal: FakeBitrix24Portal, clock: ManualClock) -> None:
    for _ in range(5000):
        portal.add_deal(STAGE_ID="WON")
    portal.operating.costs["crm.deal.list"] = 1.0
    client = client_for(portal, clock)
    rows = client.list_all("crm.deal.list")
    got = [next(rows)["ID"] for _ in range(50)]  # the first chain, 50 pages at 1 s
    portal.operating.costs["crm.deal.list"] = 12.0  # then the portal slows down
    got += [deal["ID"] for deal in rows]
    assert got == [str(i) for i in sorted(portal.store.deals)]
    blocked = [c for c in portal.calls if c.status == 429]
    # a chain sized for 1 s pages is blocked once mid-batch; the next chains are sized for
    # 12 s pages after a wait for operating_reset_at, and none is blocked again
    assert len(blocked) == 1 and blocked[0].batch not in (None, "p0")
    assert portal.limit_errors == 0
    sizes = [len(c.params["cmd"]) for c in portal.calls if c.method == "batch"]
    assert sizes[:2] == [50, 50] and all(size <= 40 for size in sizes[2:])


@pytest.mark.parametrize(("fields", "requests"), [(0, 1), (30, 1), (50, 1), (51, 2),
                                                  (2550, 2), (2551, 3)])
def test_lists_paged_by_start_read_the_pages_after_the_first_in_batches(
        portal: FakeBitrix24Portal, clock: ManualClock, fields: int, requests: int) -> None:
    names = [portal.add_userfield(f"F{n}") for n in range(fields)]
    client = client_for(portal, clock)
    before = portal.http_requests
    got = [item["FIELD_NAME"] for item in client.pages("crm.contact.userfield.list")]
    assert sorted(got) == sorted(names) and len(got) == fields
    assert portal.http_requests - before == requests
