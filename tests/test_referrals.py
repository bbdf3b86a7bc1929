"""Bring a friend in the ledger: codes, card numbers, linking, the monthly cap, the figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, select, text

from connector.db import Database
from connector.ledger.engine import Ledger
from connector.ledger.models import Account, Entry
from connector.ledger.views import AccountRef
from connector.program import Program
from connector.referrals import codes
from connector.referrals.caps import month_bounds
from connector.referrals.linking import Linker
from connector.referrals.models import ReferralEvent
from connector.referrals.stats import in_period
from connector.triggers import REFERRAL_REWARDED, from_results
from tests.conftest import Clock

ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "1")
BORIS = AccountRef("bitrix24", "acme.bitrix24.ru", "2")
VERA = AccountRef("bitrix24", "acme.bitrix24.ru", "3")
GLEB = AccountRef("bitrix24", "acme.bitrix24.ru", "4")


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"referral_bonus": "300", "referral_newcomer_bonus": "100",
            "referral_monthly_cap": 2}


@pytest.fixture
def linker(db: Database, ledger: Ledger) -> Linker:
    return Linker(db, ledger)


def code_of(ledger: Ledger, ref: AccountRef) -> str:
    ledger.open_account(ref)
    code = ledger.account(ref).referral_code
    assert code is not None
    return code


def events(db: Database) -> list[tuple[str, str | None]]:
    with db.transaction(write=False) as session:
        return [(e.outcome, e.code) for e in session.scalars(
            select(ReferralEvent).order_by(ReferralEvent.id))]


# -- codes and card numbers --------------------------------------------------------------
def test_codes_avoid_look_alikes_and_read_in_any_case() -> None:
    drawn = {codes.new_code() for _ in range(500)}
    assert len(drawn) == 500
    assert all(len(c) == 8 and not set(c) & set("0O1IL") for c in drawn)
    code = drawn.pop()
    assert codes.normalize(f" {code[:4].lower()}-{code[4:]} ") == code
    assert codes.normalize("ABCDEFG0") is None  # 0 is not in the alphabet
    assert codes.normalize("ABC") is None and codes.normalize("") is None


def test_card_numbers_are_random_luhn_valid_ten_digits() -> None:
    cards = {codes.new_card_number() for _ in range(500)}
    assert len(cards) == 500
    assert all(len(c) == 10 and c[0] != "0" and codes.luhn_valid(c) for c in cards)
    assert not codes.luhn_valid("4539578763621487"[:-1] + "0")
    assert codes.luhn_valid("79927398713")  # the textbook example


def test_every_account_gets_a_unique_code_and_a_random_card(ledger: Ledger) -> None:
    views = [ledger.account(ref) for ref in (ANNA, BORIS)
             if ledger.open_account(ref)]
    assert views[0].referral_code != views[1].referral_code
    assert views[0].card_number != f"{views[0].id:09d}" + codes.luhn_digit(f"{views[0].id:09d}")
    assert ledger.account_by_card(views[1].card_number or "").ref == BORIS


@pytest.mark.parametrize("collides", ["card", "code"])
def test_a_drawn_card_or_code_that_is_taken_is_drawn_again(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch, collides: str) -> None:
    ledger.open_account(ANNA)
    taken = ledger.account(ANNA)
    cards = iter([taken.card_number if collides == "card" else "1000000009", "2000000008"])
    drawn = iter([taken.referral_code if collides == "code" else "ZZZZZZZY", "ZZZZZZZZ"])
    monkeypatch.setattr("connector.ledger.postings.new_card_number", lambda: next(cards))
    monkeypatch.setattr("connector.ledger.postings.new_code", lambda: next(drawn))
    ledger.open_account(BORIS)
    view = ledger.account(BORIS)
    assert (view.card_number, view.referral_code) == ("2000000008", "ZZZZZZZZ")
    assert ledger.account(ANNA) == taken


# -- linking -----------------------------------------------------------------------------
def test_a_newcomer_linked_by_code_pays_both_bonuses_on_the_first_purchase(
        ledger: Ledger, linker: Linker, db: Database) -> None:
    code = code_of(ledger, ANNA)
    link = linker.link(BORIS, code.lower(), via="api")
    assert link is not None and link.outcome == "linked"
    assert linker.link(BORIS, code, via="api").outcome == "already"  # type: ignore[union-attr]
    [accrual] = ledger.settle_purchase(BORIS, "deal:1", D("1000"))
    ledger.settle_purchase(BORIS, "deal:2", D("1000"))
    assert ledger.account(ANNA).balance == D("300.00")
    assert ledger.account(BORIS).balance == D("160.00")  # 30 + 30 (3%) + the newcomer's 100
    [transition] = [t for t in from_results([accrual]) if t.code == REFERRAL_REWARDED]
    assert transition.account_id == ledger.account_id(ANNA) and transition.deal_id is None
    view = ledger.account(ANNA)
    assert view.referrals.as_json() == {"invited": 1, "converted": 1, "points_paid": "300.00"}
    assert ledger.account(BORIS).referred_by == code
    assert events(db) == [("linked", code)]


@pytest.mark.parametrize(("given", "outcome"), [
    ("22222222", "unknown"), ("not a code!", "invalid")], ids=["names-nobody", "garbage"])
def test_a_code_that_cannot_link_is_recorded_once_and_blocks_nothing(
        ledger: Ledger, linker: Linker, db: Database, given: str, outcome: str) -> None:
    for _ in range(2):  # contact updates repeat the same field value
        link = linker.link(BORIS, given, via="bitrix24:contact")
        assert link is not None and link.outcome == outcome and link.skipped
    ledger.settle_purchase(BORIS, "deal:1", D("1000"))
    assert ledger.account(BORIS).balance == D("30.00")
    assert [e[0] for e in events(db)] == [outcome]


def test_self_referral_cycles_late_codes_and_a_second_referrer_are_refused(
        ledger: Ledger, linker: Linker, db: Database) -> None:
    anna, boris, vera = (code_of(ledger, ref) for ref in (ANNA, BORIS, VERA))
    assert linker.link(ANNA, anna, via="api").outcome == "self"  # type: ignore[union-attr]
    assert linker.link(BORIS, anna, via="api").outcome == "linked"  # type: ignore[union-attr]
    assert linker.link(ANNA, boris, via="api").outcome == "cycle"  # type: ignore[union-attr]
    assert linker.link(BORIS, vera, via="api").outcome == "taken"  # type: ignore[union-attr]
    ledger.settle_purchase(GLEB, "deal:g", D("1000"))
    assert linker.link(GLEB, vera, via="api").outcome == "purchased"  # type: ignore[union-attr]
    assert ledger.account(BORIS).referred_by == anna
    assert ledger.account(GLEB).referred_by is None
    assert [e[0] for e in events(db)] == ["self", "linked", "cycle", "taken", "purchased"]


def test_the_monthly_cap_keeps_the_link_but_not_the_reward(
        ledger: Ledger, linker: Linker, db: Database, clock: Clock) -> None:
    code = code_of(ledger, ANNA)
    newcomers = [AccountRef("bitrix24", "acme.bitrix24.ru", str(n)) for n in range(10, 14)]
    for ref in newcomers:
        linker.link(ref, code, via="api")
    for n, ref in enumerate(newcomers[:3]):
        ledger.settle_purchase(ref, f"deal:{n}", D("1000"))
    assert ledger.account(ANNA).balance == D("600.00")  # the cap is 2 a month
    assert ledger.account(newcomers[2]).balance == D("130.00")  # the newcomer is still paid
    assert ledger.account(newcomers[2]).referred_by == code
    assert [e[0] for e in events(db)].count("capped") == 1
    clock.advance(days=40)  # another month
    ledger.settle_purchase(newcomers[3], "deal:3", D("1000"))
    assert ledger.account(ANNA).balance == D("900.00")
    assert ledger.account(ANNA).referrals.as_json() == {
        "invited": 4, "converted": 4, "points_paid": "900.00"}


def test_month_bounds_are_local_calendar_months(ledger: Ledger) -> None:
    program: Program = ledger.program
    start, end = month_bounds(datetime(2026, 2, 28, 22, 30, tzinfo=UTC), program)  # 1 Mar MSK
    assert (start, end) == (datetime(2026, 2, 28, 21, tzinfo=UTC),
                            datetime(2026, 3, 31, 21, tzinfo=UTC))
    assert month_bounds(datetime(2026, 12, 10, tzinfo=UTC), program)[1] == datetime(
        2026, 12, 31, 21, tzinfo=UTC)


def test_period_figures_count_links_conversions_and_both_bonuses(
        ledger: Ledger, linker: Linker, db: Database, clock: Clock) -> None:
    code = code_of(ledger, ANNA)
    linker.link(BORIS, code, via="api")
    linker.link(VERA, code, via="api")
    ledger.settle_purchase(BORIS, "deal:1", D("1000"))
    since = clock() - timedelta(days=1)
    with db.transaction(write=False) as session:
        figures = in_period(session, since, clock() + timedelta(days=1))
        earlier = in_period(session, since - timedelta(days=30), since)
    assert figures.as_json() == {"invited": 2, "converted": 1, "points_paid": "400.00"}
    assert earlier.as_json() == {"invited": 0, "converted": 0, "points_paid": "0.00"}


def test_preview_check_tells_without_writing(ledger: Ledger, linker: Linker,
                                             db: Database) -> None:
    code = code_of(ledger, ANNA)
    assert linker.check(BORIS, code.lower()).outcome == "valid"
    assert linker.check(None, code).outcome == "valid"
    assert linker.check(ANNA, code).outcome == "self"
    assert linker.check(BORIS, "22222222").outcome == "unknown"
    assert ledger.account_id(BORIS) is None and events(db) == []


# -- the migration -----------------------------------------------------------------------
def test_migration_gives_existing_accounts_codes_and_keeps_their_cards(db: Database) -> None:
    with db.engine.begin() as connection:
        config = db._alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")  # the revision before the referral codes
    now = datetime(2026, 12, 1, tzinfo=UTC).replace(tzinfo=None)
    with db.engine.begin() as connection:
        for n in range(1, 2502):  # more than two chunks
            connection.execute(text(
                "INSERT INTO accounts (crm, portal, contact_id, card_number, balance, overdraft,"
                " tier, purchase_count, purchase_total, version, created_at, updated_at) VALUES"
                " ('bitrix24', 'p', :contact, :card, 0, 0, 'Bronze', 0, 0, 3, :now, :now)"),
                {"contact": str(n), "card": f"{n:09d}0", "now": now})
    db.upgrade()
    with db.transaction(write=False) as session:
        rows = session.execute(select(Account.card_number, Account.referral_code,
                                      Account.version)).all()
    assert len(rows) == 2501 and len({code for _, code, _ in rows}) == 2501
    assert all(codes.normalize(code) == code for _, code, _ in rows)
    assert {card for card, _, _ in rows} == {f"{n:09d}0" for n in range(1, 2502)}
    assert {version for _, _, version in rows} == {4}  # write-back sends the codes


# -- reading the code from a contact ---------------------------------------------------------
def test_referred_by_is_read_from_both_crms_contact_formats() -> None:
    from mappings import amocrm as amo
    from mappings import bitrix24 as b24

    field = "UF_CRM_LOYALTY_REFERRED_BY"
    assert b24.referred_by({field: " ab2c-d3ef "}, field) == "ab2c-d3ef"
    assert b24.referred_by({field: ["", "X2345678"]}, field) == "X2345678"  # a multiple field
    assert b24.referred_by({field: None}, field) is None
    assert b24.referred_by({field: "CODE"}, None) is None  # the field is not configured
    v2 = {"custom_fields": {"0": {"id": "700009", "code": "LOYALTY_REFERRED_BY",
                                  "values": {"0": {"value": "abcd2345"}}}}}
    v4 = {"custom_fields_values": [{"field_id": 700009, "field_code": "LOYALTY_REFERRED_BY",
                                    "values": [{"value": "ABCD2345"}]}]}
    assert amo.referred_by(v2, "LOYALTY_REFERRED_BY") == "abcd2345"
    assert amo.referred_by(v4, "LOYALTY_REFERRED_BY") == "ABCD2345"
    assert amo.referred_by({"custom_fields_values": None}, "LOYALTY_REFERRED_BY") is None


def test_stats_show_the_period_referrals(
        ledger: Ledger, linker: Linker, db: Database, clock: Clock) -> None:
    from connector.i18n import translator
    from connector.stats import format_stats, program_stats

    code = code_of(ledger, ANNA)
    linker.link(BORIS, code, via="api")
    linker.link(VERA, code, via="api")
    ledger.settle_purchase(BORIS, "deal:1", D("1000"))
    with db.transaction(write=False) as session:
        figures = program_stats(session, ledger.program, since=clock() - timedelta(days=30),
                                until=clock() + timedelta(seconds=1))
    data = figures.as_json()
    assert (data["referrals_invited"], data["referrals_converted"],
            data["referral_points"]) == (2, 1, "400.00")
    assert "referrals      2 invited, 1 converted, 400.00 points paid" in format_stats(
        figures, ledger.program.zone, translator("en"))


# -- concurrency ---------------------------------------------------------------------------
def test_parallel_conversions_never_exceed_the_monthly_cap(ledger: Ledger,
                                                          linker: Linker) -> None:
    from tests.test_concurrency import in_parallel

    code = code_of(ledger, ANNA)
    newcomers = [AccountRef("bitrix24", "acme.bitrix24.ru", str(n)) for n in range(20, 28)]
    for ref in newcomers:
        linker.link(ref, code, via="api")
    outcomes = in_parallel(len(newcomers), lambda i: ledger.settle_purchase(
        newcomers[i], f"deal:{i}", D("1000")))
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert ledger.account(ANNA).balance == D("600.00")  # 2 of 8: the cap
    assert ledger.account(ANNA).referrals.converted == 8
    assert ledger.verify()[1] == []


def test_a_repeated_link_and_the_first_purchase_at_once_do_not_deadlock(
        ledger: Ledger, linker: Linker) -> None:
    """Contact updates repeat the code while the first purchase pays the referral: both
    lock the newcomer's row, then the referrer's."""
    from tests.test_concurrency import in_parallel

    code = code_of(ledger, ANNA)
    for round_ in range(20):
        ref = AccountRef("bitrix24", "acme.bitrix24.ru", f"r{round_}")
        linker.link(ref, code, via="api")

        def either(i: int, ref: AccountRef = ref) -> Any:
            if i == 0:
                return linker.link(ref, code, via="api")
            return ledger.settle_purchase(ref, f"deal:{ref.contact_id}", D("1000"))

        outcomes = in_parallel(2, either)
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert ledger.account(ANNA).balance == D("600.00")  # the monthly cap of 2
    assert ledger.verify()[1] == []


def test_the_referral_outcome_is_stored_with_the_purchase_entry(
        ledger: Ledger, linker: Linker, db: Database) -> None:
    """The purchase entry goes in with a Core INSERT and is attached to the session as if
    loaded (Postings._post); the referral outcome set on it afterwards is still written."""
    code = code_of(ledger, ANNA)
    linker.link(BORIS, code, via="api")
    [accrual] = ledger.settle_purchase(BORIS, "deal:1", D("1000"))
    with db.transaction(write=False) as session:
        stored = session.get(Entry, accrual.entry_id)
        assert stored is not None and stored.details is not None
        assert stored.details["referral"] == accrual.details["referral"] == {
            "referrer_id": ledger.account_id(ANNA), "rewarded": True}
        assert stored.details["rate"] == accrual.details["rate"]
        assert session.scalar(select(func.count()).select_from(Entry)
                              .where(Entry.idempotency_key == stored.idempotency_key)) == 1
