"""The ledger's hot path: the rolling spend kept on the account, the idempotency check
folded into the entry's UNIQUE key, and how many statements an accrual and a redemption take."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, func, select, update

from connector.config import ProgramSettings, Settings
from connector.db import Database
from connector.errors import IdempotencyConflictError, InsufficientPointsError, LedgerError
from connector.ledger.engine import Ledger
from connector.ledger.models import Account, Entry
from connector.ledger.views import AccountRef
from connector.program import Program
from connector.tables import Base
from tests.conftest import Clock

ANNA = AccountRef("amocrm", "shop", "1")


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"tiers": [{"name": "Bronze", "min_spend": "0", "rate": "0.03"},
                      {"name": "Silver", "min_spend": "10000", "rate": "0.05"},
                      {"name": "Gold", "min_spend": "50000", "rate": "0.07"}],
            "tier_period_days": 365, "points_lifetime_days": 730}


def kept(db: Database) -> tuple[int, Any, Any]:
    with db.transaction(write=False) as session:
        account = session.query(Account).one()
        return account.tier_spend, account.tier_spend_since, account.tier_spend_oldest


def test_the_kept_spend_follows_the_window_as_purchases_leave_it(
        ledger: Ledger, clock: Clock, db: Database) -> None:
    ledger.accrue(ANNA, D("30000"), key="old")
    first = clock.now
    clock.advance(days=300)
    ledger.accrue(ANNA, D("15000"), key="mid")
    assert ledger.account(ANNA).tier == "Silver"  # 45,000: below Gold
    assert kept(db)[0] == 4_500_000 and kept(db)[2] == first
    # The first purchase leaves the window: the kept sum no longer answers for it and is
    # summed again; 15,000 + 30,000 = 45,000 stays below Gold, where the stale sum (75,000)
    # would have made it Gold.
    clock.advance(days=70)
    result = ledger.accrue(ANNA, D("30000"), key="new")
    assert "tier_up" not in result.details and ledger.account(ANNA).tier == "Silver"
    assert ledger.account(ANNA).qualifying_spend == D("45000.00")
    spend, since, oldest = kept(db)
    assert (spend, oldest) == (4_500_000, first + timedelta(days=300)) and since > first
    # A return of a purchase in the window comes off the kept sum; verify agrees.
    ledger.reverse(ANNA, "mid", key="mid:returned")
    assert kept(db)[0] == 3_000_000
    assert ledger.verify() == (1, [])


def test_verify_finds_a_kept_spend_that_is_not_the_entries_sum(
        ledger: Ledger, db: Database) -> None:
    ledger.accrue(ANNA, D("1000"), key="deal:1")
    assert ledger.verify() == (1, [])
    with db.transaction() as session:
        session.execute(update(Account).values(tier_spend=Account.tier_spend + 1))
    checked, [problem] = ledger.verify()
    assert checked == 1 and "kept tier spend 1000.01" in str(problem) \
        and "entries 1000.00" in str(problem)


def test_an_account_without_a_kept_spend_sums_it_at_the_next_purchase(
        ledger: Ledger, db: Database) -> None:
    ledger.accrue(ANNA, D("40000"), key="deal:1")
    with db.transaction() as session:  # as migration 0017 leaves existing accounts
        session.execute(update(Account).values(tier_spend=0, tier_spend_since=None,
                                               tier_spend_oldest=None))
    assert ledger.verify() == (1, [])
    result = ledger.accrue(ANNA, D("10000"), key="deal:2")
    assert result.details.get("tier_up") == "Gold"
    assert kept(db)[0] == 5_000_000 and ledger.verify() == (1, [])


def test_a_repeated_redemption_answers_with_the_original_after_the_points_are_gone(
        ledger: Ledger, clock: Clock) -> None:
    ledger.grant_bonus(ANNA, "welcome", key="w", points=D("100"))
    first = ledger.redeem(ANNA, D("100"), key="pay:1")
    again = ledger.redeem(ANNA, D("100"), key="pay:1")  # nothing left: the original answers
    assert again.duplicate and again.entry_id == first.entry_id and not first.duplicate
    with pytest.raises(InsufficientPointsError):
        ledger.redeem(ANNA, D("100"), key="pay:2")
    with pytest.raises(IdempotencyConflictError):  # the key names another kind of entry
        ledger.accrue(ANNA, D("100"), key="pay:1")
    assert ledger.account(ANNA).balance == D("0.00") and ledger.verify() == (1, [])


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split()[0].upper())

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def test_an_accrual_and_a_redemption_take_one_read_each_and_their_writes(
        ledger: Ledger, db: Database) -> None:
    ledger.accrue(ANNA, D("5000"), key="deal:0")
    with statements(db) as seen:
        ledger.accrue(ANNA, D("1000"), key="deal:1")
    # The locked account read, the entry, the lot, the account; SQLite adds its BEGIN.
    # No promo campaign is configured, so no code attached to the purchase is looked up.
    assert [s for s in seen if s != "BEGIN"] == ["SELECT", "INSERT", "INSERT", "UPDATE"]
    with statements(db) as seen:
        ledger.redeem(ANNA, D("10"), key="pay:1")
    # The locked account read, the spendable lots, the entry, the lot spent from and its
    # allocation, the account.
    assert [s for s in seen if s != "BEGIN"] == ["SELECT", "SELECT", "INSERT", "UPDATE",
                                                 "INSERT", "UPDATE"]


def test_an_account_view_reads_the_account_its_open_lots_and_one_row_of_figures(
        ledger: Ledger, db: Database, clock: Clock) -> None:
    bob = AccountRef("amocrm", "shop", "2")
    ledger.accrue(ANNA, D("5000"), key="deal:0")
    ledger.link_referral(bob, ANNA)
    ledger.accrue(bob, D("20000"), key="deal:1")
    # The referrer's bonus as _pay_referral keys it (no referral bonus in this program).
    ledger.grant_bonus(ANNA, "referral", key="referral:2", points=D("50"))
    clock.advance(days=400)  # the kept spend no longer answers: it is summed, read only
    for ref in (ANNA, bob):
        with statements(db) as seen:
            view = ledger.account(ref)
        # The account; its lots with points left (available, pending, next expiry); the
        # referral figures, the referrer's code and the summed spend in one row.
        assert [s for s in seen if s != "BEGIN"] == ["SELECT", "SELECT", "SELECT"]
        assert view.qualifying_spend == D("0.00")
    anna, newcomer = ledger.account(ANNA), ledger.account(bob)
    assert (anna.referrals.invited, anna.referrals.converted) == (1, 1)
    assert anna.referrals.points_paid == D("50.00") and anna.referred_by is None
    assert newcomer.referred_by == anna.referral_code


def test_settling_a_new_deal_reads_the_account_and_the_deals_entries(
        ledger: Ledger, db: Database) -> None:
    ledger.settle_purchase(ANNA, "deal:0", D("5000"))
    with statements(db) as seen:
        [result] = ledger.settle_purchase(ANNA, "deal:1", D("1000"))
    # One transaction: the locked account, the deal's entries on any account (none here:
    # no one else's to take back first; they number the key), the entry, the lot, the
    # account.
    assert seen.count("BEGIN") == (1 if db.dialect == "sqlite" else 0)
    assert [s for s in seen if s != "BEGIN"] == ["SELECT", "SELECT", "INSERT", "INSERT",
                                                 "UPDATE"]
    assert result.points == D("30.00") and ledger.verify() == (1, [])
    # Held by someone else: that transaction is undone, the holder's reversal comes first.
    boris = AccountRef("amocrm", "shop", "2")
    moved = ledger.settle_purchase(boris, "deal:1", D("1000"))
    assert [(r.kind, r.points) for r in moved] == [("reversal", D("-30.00")),
                                                  ("accrual", D("30.00"))]
    assert ledger.account(boris).balance == D("30.00") and ledger.verify() == (2, [])


def test_with_a_promo_campaign_an_accrual_looks_up_the_code_attached_to_its_purchase(
        db: Database, settings: Settings, clock: Clock) -> None:
    program = ProgramSettings.model_validate({**settings.program.model_dump(), "promo": [
        {"name": "winter", "code": "WINTER25", "points": "25"}]})
    ledger = Ledger(db, Program(program), clock=clock)
    ledger.accrue(ANNA, D("5000"), key="deal:0")
    with statements(db) as seen:
        ledger.accrue(ANNA, D("1000"), key="deal:1")
    # The code is read by the upsert that marks the purchase settled (an attach racing the
    # accrual then finds it settled), before the entry, the lot and the account.
    assert [s for s in seen if s != "BEGIN"] == ["SELECT", "INSERT", "INSERT", "INSERT",
                                                 "UPDATE"]


# -- the kept spend against the entries, over random histories ----------------------------

STEP = st.one_of(
    st.tuples(st.just("buy"), st.integers(1, 40_000)),     # whole roubles
    st.tuples(st.just("bought"), st.integers(1, 500)),     # a purchase recorded days late
    st.tuples(st.just("return"), st.integers(0, 20)),      # which earlier purchase
    st.tuples(st.just("part"), st.integers(0, 20)),        # part of an earlier purchase back
    st.tuples(st.just("settle"), st.integers(0, 40_000)),  # a deal re-priced (0: lost)
    st.tuples(st.just("wait"), st.integers(1, 200)),       # days
)


def window_sum(db: Database, ledger: Ledger) -> int:
    start = ledger.program.tier_window_start(ledger.clock())
    with db.transaction(write=False) as session:
        return int(session.scalar(select(func.coalesce(func.sum(Entry.purchase_amount), 0))
                                  .where(Entry.purchase_at >= start)))


def test_the_kept_spend_decides_as_the_sum_would_over_random_histories(
        db: Database, settings: Settings) -> None:
    examples = 40 if db.dialect == "sqlite" else 10

    @hypothesis_settings(max_examples=examples, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])
    @given(steps=st.lists(STEP, min_size=1, max_size=25))
    def check(steps: list[tuple[str, int]]) -> None:
        with db.transaction() as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(delete(table))
        clock = Clock()
        ledger = Ledger(db, Program(settings.program), clock=clock)
        bought: list[str] = []
        for n, (what, value) in enumerate(steps):
            if what == "buy":
                ledger.accrue(ANNA, D(value), key=f"buy:{n}")
                bought.append(f"buy:{n}")
            elif what == "bought":  # dated before the kept sum's start, or out of the window
                ledger.accrue(ANNA, D(1000 + value), key=f"buy:{n}",
                              occurred_at=clock.now - timedelta(days=value))
                bought.append(f"buy:{n}")
            elif what == "return" and bought:
                source = bought[value % len(bought)]
                with suppress(LedgerError):  # already reversed
                    ledger.reverse(ANNA, source, key=f"return:{n}")
            elif what == "part" and bought:
                source = bought[value % len(bought)]
                with suppress(LedgerError):  # nothing left of it
                    ledger.return_purchase(ANNA, source, D(1 + value), key=f"part:{n}")
            elif what == "settle":
                ledger.settle_purchase(ANNA, "deal:1", D(value) if value else None)
            elif what == "wait":
                clock.advance(days=value)
            if ledger.account_id(ANNA) is None:  # nothing bought yet
                continue
            truth = window_sum(db, ledger)
            view = ledger.account(ANNA)
            assert view.qualifying_spend == D(truth) / 100
            if what in ("buy", "settle"):  # upgrades happen at a purchase: never missed
                best = ledger.program.tier_for(D(truth) / 100).name
                assert ledger.program.tier_rank(view.tier) >= ledger.program.tier_rank(best)
            assert ledger.verify() == (1, [])

    check()
