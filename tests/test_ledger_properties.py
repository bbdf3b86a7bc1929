"""Property-based tests: random operation sequences keep the ledger's invariants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, func, select

from connector.config import load_settings
from connector.db import Database
from connector.errors import LedgerError
from connector.ledger.engine import Ledger
from connector.ledger.models import Account, Entry, Lot
from connector.ledger.views import AccountRef, Result
from connector.program import Program
from connector.tables import Base
from tests.conftest import BACKENDS, POSTGRES_URL, Clock

REFS = [AccountRef("amocrm", "shop", str(n)) for n in range(3)]
money = st.integers(min_value=1, max_value=5_000_000).map(lambda cents: Decimal(cents) / 100)
points = st.integers(min_value=1, max_value=50_000).map(lambda cents: Decimal(cents) / 100)
account = st.sampled_from(REFS)


@pytest.fixture(params=BACKENDS)
def property_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = POSTGRES_URL if request.param == "postgresql" else f"sqlite:///{tmp_path}/p.db"
    db = Database(load_settings(None, database={"url": url}).database)
    db.upgrade()
    yield db
    db.dispose()


def wipe(db: Database) -> None:
    with db.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))


def make_machine(db: Database, negative_balance: str) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            wipe(db)
            self.clock = Clock()
            program = load_settings(None, program={
                "negative_balance": negative_balance, "points_lifetime_days": 60,
                "pending_days": 0, "redeem_share": "0.5",
                "bonuses": {"review": "25"},
            }).program
            self.ledger = Ledger(db, Program(program), clock=self.clock)
            self.done: list[tuple[Callable[[], Result], Result]] = []
            self.sources: list[tuple[AccountRef, str]] = []
            self.counter = 0

        def key(self) -> str:
            self.counter += 1
            return f"op:{self.counter}"

        def run(self, call: Callable[[], Result]) -> Result | None:
            try:
                result = call()
            except LedgerError:
                return None
            assert not result.duplicate
            self.done.append((call, result))
            return result

        @initialize()
        def start(self) -> None:
            self.run(lambda: self.ledger.grant_bonus(REFS[0], "review", key="seed"))

        @rule(ref=account, amount=money)
        def accrue(self, ref: AccountRef, amount: Decimal) -> None:
            key = self.key()
            if self.run(lambda: self.ledger.accrue(ref, amount, key=key)):
                self.sources.append((ref, key))

        @rule(ref=account, wanted=points, purchase=st.none() | money, partial=st.booleans())
        def redeem(self, ref: AccountRef, wanted: Decimal, purchase: Decimal | None,
                   partial: bool) -> None:
            key = self.key()
            before = self.lot_remaining(ref)
            result = self.run(lambda: self.ledger.redeem(
                ref, wanted, key=key, purchase_amount=purchase, partial=partial))
            if result is None:
                return
            self.sources.append((ref, key))
            assert -result.points <= wanted
            if purchase is not None:
                assert -result.points <= purchase * Decimal("0.5")
            after = self.lot_remaining(ref)
            touched = [lot for lot in before if after[lot] != before[lot]]
            untouched_older = [lot for lot in before if after[lot] > 0
                               and touched and lot < touched[-1]]
            assert not untouched_older, "redemption skipped an older lot"

        @rule(deal=st.integers(0, 2), ref=st.none() | account, amount=st.none() | money)
        def crm_purchase_state(self, deal: int, ref: AccountRef | None,
                               amount: Decimal | None) -> None:
            source = f"deal:{deal}"
            self.ledger.settle_purchase(ref, source, amount)
            with db.transaction(write=False) as session:
                spend = session.execute(
                    select(Account.contact_id, func.sum(Entry.purchase_amount))
                    .join(Entry, Entry.account_id == Account.id)
                    .where(Entry.source == source).group_by(Account.contact_id)).all()
            held = {contact: total for contact, total in spend if total}
            expected = {ref.contact_id: int(amount * 100)} if ref and amount else {}
            assert held == expected
            assert self.ledger.settle_purchase(ref, source, amount) == []

        @precondition(lambda self: self.sources)
        @rule(data=st.data())
        def reverse(self, data: st.DataObject) -> None:
            ref, source = data.draw(st.sampled_from(self.sources))
            key = self.key()
            self.run(lambda: self.ledger.reverse(ref, source, key=key))

        @rule(ref=account, amount=points, negative=st.booleans())
        def adjust(self, ref: AccountRef, amount: Decimal, negative: bool) -> None:
            key = self.key()
            self.run(lambda: self.ledger.adjust(ref, -amount if negative else amount,
                                                key=key, reason="property test"))

        @rule(days=st.integers(min_value=1, max_value=90))
        def time_passes_and_points_expire(self, days: int) -> None:
            self.clock.advance(days=days)
            self.ledger.expire_due()
            with db.transaction(write=False) as session:
                overdue = session.scalar(select(func.count()).select_from(Lot).where(
                    Lot.remaining > 0, Lot.expires_at <= self.clock.now))
            assert overdue == 0

        @precondition(lambda self: self.done)
        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            call, original = data.draw(st.sampled_from(self.done))
            before = self.snapshot()
            again = call()
            assert again.duplicate
            assert (again.entry_id, again.points, again.balance) == (
                original.entry_id, original.points, original.balance)
            assert self.snapshot() == before

        def lot_remaining(self, ref: AccountRef) -> dict[tuple[Any, int], int]:
            """Spendable lots in FIFO order -> points left."""
            with db.transaction(write=False) as session:
                rows = session.execute(
                    select(Lot.earned_at, Lot.id, Lot.remaining).join(Account)
                    .where(Account.contact_id == ref.contact_id,
                           Lot.available_at <= self.clock.now)
                    .order_by(Lot.earned_at, Lot.id))
                return {(earned, lot_id): remaining for earned, lot_id, remaining in rows}

        def snapshot(self) -> tuple[int, int, int]:
            with db.transaction(write=False) as session:
                return (session.scalar(select(func.count()).select_from(Entry)) or 0,
                        session.scalar(select(func.sum(Account.balance))) or 0,
                        session.scalar(select(func.sum(Lot.remaining))) or 0)

        @invariant()
        def books_balance(self) -> None:
            _, mismatches = self.ledger.verify()
            assert mismatches == []

        @invariant()
        def never_negative_under_clamp(self) -> None:
            if negative_balance == "clamp":
                with db.transaction(write=False) as session:
                    lowest = session.scalar(select(func.min(Account.balance)))
                assert lowest is None or lowest >= 0

        def teardown(self) -> None:
            before = self.snapshot()
            for call, original in self.done:
                assert call().entry_id == original.entry_id
            assert self.snapshot() == before

    return LedgerMachine


@pytest.mark.parametrize("negative_balance", ["clamp", "allow"])
def test_random_operation_sequences(property_db: Database, negative_balance: str) -> None:
    examples = 150 if property_db.dialect == "sqlite" else 40
    run_state_machine_as_test(
        make_machine(property_db, negative_balance),
        settings=settings(max_examples=examples, stateful_step_count=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
