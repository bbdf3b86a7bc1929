"""A promo code attached to a purchase (a robot or pipeline action) while the purchase is
being accrued: an attach that answers "valid" is the code the accrual uses, never one kept
after the accrual has read past it; two attaches of the same purchase leave one code. On
SQLite and PostgreSQL, with the interleavings forced."""

from __future__ import annotations

import threading
from contextlib import suppress
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from connector.codes import redeem
from connector.codes.attach import attach, used_by
from connector.codes.models import PromoAttachment
from connector.codes.redeem import Outcome
from connector.db import Database
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef
from tests.conftest import Clock
from tests.test_concurrency import in_parallel

ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "1")
DEAL = "deal:9"


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"promo": [{"name": "winter", "code": "WINTER25", "points": "100"},
                      {"name": "spring", "code": "SPRING10", "points": "10"}]}


def attachments(db: Database) -> dict[str, str | None]:
    with db.transaction(write=False) as session:
        return {row.source: row.code for row in session.scalars(select(PromoAttachment))}


def test_an_accrual_committed_between_the_check_and_the_save_is_not_missed(
        ledger: Ledger, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    checked = ledger.check_promo

    def check_then_accrue(*args: Any, **kwargs: Any) -> Outcome:
        answer = checked(*args, **kwargs)
        ledger.settle_purchase(ANNA, DEAL, D("1000"))  # another worker, right now
        return answer

    monkeypatch.setattr(ledger, "check_promo", check_then_accrue)
    answer = attach(db, ledger, DEAL, "winter25", ref=ANNA, amount=D("1000"), via="test")
    assert (answer.outcome, answer.refused) == ("settled", True)
    assert used_by(db, DEAL) is None  # the accrual had no code to use...
    assert attachments(db).get(DEAL) is None  # ...and none is kept as if it would be used
    assert ledger.account(ANNA).balance == D("30.00")


def test_an_attach_while_the_accrual_is_open_is_refused_or_used(
        ledger: Ledger, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accrual has read the purchase's attachment and not yet committed when the attach
    comes: the attach must wait for it (and then say it is settled), not slip in unseen."""
    read, attached_done = threading.Event(), threading.Event()
    original = redeem.attached

    def read_then_linger(*args: Any, **kwargs: Any) -> str | None:
        found = original(*args, **kwargs)
        read.set()
        attached_done.wait(timeout=1.5)  # an attach that does not wait for us is done by then
        return found

    monkeypatch.setattr(redeem, "attached", read_then_linger)

    def accrual() -> object:
        return ledger.settle_purchase(ANNA, DEAL, D("1000"))

    def late_attach() -> Outcome:
        assert read.wait(timeout=10)
        try:
            return attach(db, ledger, DEAL, "WINTER25", ref=ANNA, amount=D("1000"), via="test")
        finally:
            attached_done.set()

    settled, answer = in_parallel(2, lambda i: (accrual, late_attach)[i]())
    assert not isinstance(settled, Exception), settled
    assert isinstance(answer, Outcome), answer
    used = used_by(db, DEAL)
    # Either the accrual used the code, or the attach said it came too late: never "valid"
    # for a code that nothing will use.
    assert (used is not None and used.code == "WINTER25") or answer.outcome == "settled", \
        (answer, used)
    assert answer.outcome == "settled" and ledger.account(ANNA).balance == D("30.00")


def test_two_codes_attached_to_one_purchase_at_once_leave_one(
        ledger: Ledger, db: Database) -> None:
    # Both read before either writes (as two workers would): the barrier holds each attach's
    # write of the attachment until the other one's comes (SQLite's single writer lets one
    # at a time through, and the barrier gives up after a second).
    barrier = threading.Barrier(2, timeout=1)

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PROMO_ATTACHMENTS"):
            with suppress(threading.BrokenBarrierError):
                barrier.wait()

    event.listen(db.engine, "before_cursor_execute", hold)
    try:
        answers = in_parallel(2, lambda i: attach(db, ledger, DEAL, ("WINTER25", "SPRING10")[i],
                                                  ref=ANNA, amount=D("1000"), via="test"))
    finally:
        event.remove(db.engine, "before_cursor_execute", hold)
    assert all(isinstance(a, Outcome) and a.outcome == "valid" for a in answers), answers
    kept = attachments(db)[DEAL]
    assert kept in ("WINTER25", "SPRING10")
    [result] = ledger.settle_purchase(ANNA, DEAL, D("1000"))
    assert result.details["promo"]["code"] == kept


def test_a_settled_mark_needs_no_code_and_0020_downgrades_without_the_marks(
        ledger: Ledger, db: Database) -> None:
    attach(db, ledger, "deal:1", "WINTER25", ref=ANNA, amount=D("10"), via="test")
    ledger.settle_purchase(ANNA, "deal:2", D("1000"))  # no code attached: a bare mark
    assert attachments(db) == {"deal:1": "WINTER25", "deal:2": None}
    with pytest.raises(IntegrityError), db.transaction() as session:  # neither code nor mark
        session.add(PromoAttachment(source="deal:3", created_at=ledger.clock()))
    db.downgrade("0019")
    with db.transaction(write=False) as session:
        assert session.execute(text("SELECT source, code FROM promo_attachments")).all() == [
            ("deal:1", "WINTER25")]
    db.upgrade()
    assert attachments(db) == {"deal:1": "WINTER25"}


@pytest.mark.parametrize("program_settings", [{}])
def test_without_promo_campaigns_a_purchase_leaves_no_mark(ledger: Ledger, db: Database) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("1000"))
    assert attachments(db) == {}
    answer = attach(db, ledger, DEAL, "WINTER25", ref=ANNA, amount=D("1000"), via="test")
    assert answer.refused and attachments(db) == {}


def test_every_accrual_with_campaigns_marks_its_purchase_once(ledger: Ledger, db: Database,
                                                              clock: Clock) -> None:
    """A purchase accrued again (lost, then won again) keeps the first mark's time and code."""
    attach(db, ledger, DEAL, "SPRING10", ref=ANNA, amount=D("1000"), via="test")
    ledger.settle_purchase(ANNA, DEAL, D("1000"))
    with db.transaction(write=False) as session:
        first = session.get(PromoAttachment, DEAL)
        assert first is not None and first.settled_at is not None
        marked = first.settled_at
    clock.advance(hours=1)
    ledger.settle_purchase(ANNA, DEAL, None)  # lost
    ledger.settle_purchase(ANNA, DEAL, D("1500"))  # won again: a new accrual
    with db.transaction(write=False) as session:
        again = session.get(PromoAttachment, DEAL)
        assert again is not None and (again.code, again.settled_at) == ("SPRING10", marked)
