"""Concurrent requests against one account, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D
from typing import TypeVar

from connector.errors import InsufficientPointsError
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef, Result

T = TypeVar("T")
REF = AccountRef("bitrix24", "acme.bitrix24.ru", "7")


def in_parallel(count: int, task: Callable[[int], T]) -> list[T | Exception]:
    """Run `task(i)` on `count` threads released at the same moment."""
    start = threading.Barrier(count)

    def run(i: int) -> T | Exception:
        start.wait()
        try:
            return task(i)
        except Exception as exc:  # collected and asserted on by the caller
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_twenty_parallel_redemptions_against_a_balance_for_five(ledger: Ledger) -> None:
    ledger.adjust(REF, D("100"), key="fund", reason="test funds")
    outcomes = in_parallel(20, lambda i: ledger.redeem(REF, D("20"), key=f"pay:{i}"))
    succeeded = [o for o in outcomes if isinstance(o, Result)]
    refused = [o for o in outcomes if isinstance(o, InsufficientPointsError)]
    assert len(succeeded) == 5 and len(refused) == 15
    assert ledger.account(REF).balance == D("0.00")
    assert sorted(r.balance for r in succeeded) == [D("0"), D("20"), D("40"), D("60"), D("80")]
    assert ledger.verify() == (1, [])


def test_parallel_requests_with_one_key_write_once(ledger: Ledger) -> None:
    outcomes = in_parallel(10, lambda i: ledger.accrue(REF, D("1000"), key="deal:1"))
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    results = [o for o in outcomes if isinstance(o, Result)]
    assert len({r.entry_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert ledger.account(REF).balance == D("30.00")


def test_parallel_first_purchases_create_one_account(ledger: Ledger) -> None:
    outcomes = in_parallel(10, lambda i: ledger.accrue(REF, D("100"), key=f"deal:{i}"))
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    assert len({o.account_id for o in outcomes if isinstance(o, Result)}) == 1
    view = ledger.account(REF)
    assert view.purchase_count == 10 and view.balance == D("30.00")


def test_parallel_returns_with_one_key_answer_the_original(ledger: Ledger) -> None:
    """Found in review: on PostgreSQL a repeat that waited for the account's lock found the
    purchase returned by the original and was refused (409) instead of answered with it."""
    ledger.accrue(REF, D("1000"), key="deal:1", source="deal:1")
    outcomes = in_parallel(10, lambda i: ledger.return_purchase(REF, "deal:1", D("1000"),
                                                                key="return:1"))
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    results = [o for o in outcomes if isinstance(o, Result)]
    assert len({r.entry_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert ledger.account(REF).balance == D("0.00") and ledger.verify() == (1, [])


def test_parallel_redemptions_with_one_key_answer_the_original(ledger: Ledger) -> None:
    """The whole balance under one key: the repeats find it spent and answer with the
    original (the key's UNIQUE index is the idempotency check)."""
    ledger.adjust(REF, D("100"), key="fund", reason="test funds")
    outcomes = in_parallel(10, lambda i: ledger.redeem(REF, D("100"), key="pay:1"))
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    results = [o for o in outcomes if isinstance(o, Result)]
    assert len({r.entry_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert ledger.account(REF).balance == D("0.00") and ledger.verify() == (1, [])


def test_parallel_once_bonuses_with_one_key_answer_the_grant(ledger: Ledger) -> None:
    """Found in review: on PostgreSQL a repeat that looked its key up before the grant and
    then waited for the account's lock found the bonus granted and answered "already
    granted" with no entry, instead of the grant under its own key. Rounds: it is a race."""
    ledger.adjust(REF, D("5"), key="fund", reason="test funds")
    for round_ in range(4):
        key, name = f"review:{round_}", f"review-{round_}"
        outcomes = in_parallel(16, lambda i, key=key, name=name: ledger.grant_bonus(
            REF, name, points=D("5"), key=key, once=True))
        assert all(isinstance(o, Result) for o in outcomes), outcomes
        results = [o for o in outcomes if isinstance(o, Result)]
        assert {r.entry_id for r in results} != {None}
        assert len({r.entry_id for r in results}) == 1, [(r.entry_id, r.details)
                                                         for r in results]
        assert sum(not r.duplicate for r in results) == 1
    assert ledger.account(REF).balance == D("25.00") and ledger.verify() == (1, [])
