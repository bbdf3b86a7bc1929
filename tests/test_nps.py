"""NPS: recording answers once per source event, the bonus once per period (exact under
concurrency), and the report on hand-checked small books, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import func, select, update

from connector.errors import IdempotencyConflictError, InvalidScoreError
from connector.ledger.models import Account, Entry
from connector.ledger.views import AccountRef
from connector.nps.answers import Recorded, parse_score
from connector.nps.models import NPSAnswer
from connector.nps.report import Tally, month_starts, nps_report
from connector.services import Services
from tests.conftest import Api, Clock
from tests.test_concurrency import in_parallel

PORTAL = "acme.bitrix24.ru"
A, B, C, D_, E = (AccountRef("bitrix24", PORTAL, c) for c in ("1", "2", "3", "4", "5"))
ZONE_NOTE = "Europe/Moscow, UTC+3: the program's zone"


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"tiers": [{"name": "Bronze", "min_spend": "0", "rate": "0.05"},
                      {"name": "Silver", "min_spend": "10000", "rate": "0.10"}],
            "nps": {"bonus": "50", "period_days": 90}}


def at(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def answer(services: Services, ref: AccountRef, score: object, when: datetime,
           key: str) -> Recorded:
    return services.nps.record(ref, score, source="cli", source_key=key, occurred_at=when)


# -- scores ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "score"), [(0, 0), (10, 10), ("7", 7), (" 9 ", 9),
                                               ("8.0", 8), (D("6"), 6), (D("6.00"), 6)])
def test_a_score_is_a_whole_number_from_0_to_10(given: object, score: int) -> None:
    assert parse_score(given) == score


@pytest.mark.parametrize("given", [11, -1, "11", "7.5", D("7.5"), 7.0, True, None, "",
                                   "seven", "1e1", "٣", [8]])
def test_anything_else_is_refused_saying_what_is_needed(given: object) -> None:
    with pytest.raises(InvalidScoreError, match="whole number from 0 to 10"):
        parse_score(given)


def test_the_tally() -> None:
    assert Tally(3, 1, 1).nps == D("40.0")
    assert Tally(1, 1, 1).nps == D("0.0")
    assert Tally(0, 0, 3).nps == D("-100.0")
    assert Tally(2, 0, 1).nps == D("33.3") and Tally(1, 0, 2).nps == D("-33.3")
    assert Tally().nps is None


# -- the hand-checked book ---------------------------------------------------------------------
def hand_book(services: Services) -> None:
    """Five customers; B and D are Silver (a 10,000 purchase each).

    | who | answers (date: score)        | latest Feb 1 - Apr 1 | Feb    | March  |
    | A   | Mar 2: 10, Mar 20: 3         | 3 detractor          | -      | 3 D    |
    | B   | Mar 8: 9                     | 9 promoter           | -      | 9 P    |
    | C   | Mar 12: 7                    | 7 passive            | -      | 7 N    |
    | D   | Feb 10: 6, Mar 5: 10         | 10 promoter          | 6 D    | 10 P   |
    | E   | Feb 28 22:00 UTC: 10         | 10 promoter          | -      | 10 P   |
    | A   | Jan 20: 0 (before the period)| -                    | -      | -      |

    E's answer is 1 March 01:00 in Moscow: it counts in March. Overall P3 N1 D1: NPS 40.0;
    Bronze (A, C, E) P1 N1 D1: 0.0; Silver (B, D) P2: 100.0; February D's 6 and nothing
    else: -100.0; March P3 N1 D1 (A, B, C, D, E): 40.0.
    """
    for ref in (B, D_):
        services.ledger.accrue(ref, D("10000"), key=f"buy:{ref.contact_id}",
                               occurred_at=at(1, 5))
    book = [(A, 0, at(1, 20)), (A, 10, at(3, 2)), (A, 3, at(3, 20)), (B, 9, at(3, 8)),
            (C, 7, at(3, 12)), (D_, 6, at(2, 10)), (D_, 10, at(3, 5)), (E, 10, at(2, 28, 22))]
    for index, (ref, score, when) in enumerate(book):
        answer(services, ref, score, when, f"book:{index}")
    with services.db.transaction() as session:  # segments as the rfm job would leave them
        session.execute(update(Account).where(Account.contact_id.in_(["2", "4"]))
                        .values(segment="champions"))
        session.execute(update(Account).where(Account.contact_id == "3")
                        .values(segment="at_risk"))


def report(services: Services, since: datetime, until: datetime) -> Any:
    with services.db.transaction(write=False) as session:
        return nps_report(session, ["Bronze", "Silver"], services.settings.program.zone,
                          since=since, until=until)


def test_nps_of_the_hand_checked_book(services: Services) -> None:
    hand_book(services)
    # 1 February to 1 April, midnights in Moscow.
    figures = report(services, at(1, 31, 21), at(3, 31, 21))
    assert figures.overall == Tally(promoters=3, passives=1, detractors=1)
    assert figures.overall.nps == D("40.0")
    assert figures.answers == 7  # every answer in the period; A's January one is outside
    assert {name: (t.nps, t.answers) for name, t in figures.by_tier.items()} == \
        {"Bronze": (D("0.0"), 3), "Silver": (D("100.0"), 2)}
    assert {code: (t.nps, t.answers) for code, t in figures.by_segment.items()} == \
        {"champions": (D("100.0"), 2), "at_risk": (D("0.0"), 1), None: (D("0.0"), 2)}
    assert [(m.start, m.tally.nps, m.tally.answers) for m in figures.by_month] == [
        (date(2026, 2, 1), D("-100.0"), 1), (date(2026, 3, 1), D("40.0"), 5)]
    data = figures.as_json()
    assert data["nps"] == "40.0" and data["by_segment"]["unscored"]["promoters"] == 1
    assert data["by_month"][0] == {"month": "2026-02", "nps": "-100.0", "answers": 1,
                                   "promoters": 0, "passives": 0, "detractors": 1}

    # A shorter period: only what falls in it, each account's latest inside it.
    march = report(services, at(3, 1, 0), at(3, 10, 0))  # A 10, D 10, B 9, E out (Feb 28 UTC)
    assert march.overall == Tally(promoters=3) and march.by_tier["Bronze"] == Tally(1)
    early = report(services, at(1, 1, 0), at(3, 3, 0))  # A 10 (Mar 2), D 6, E 10
    assert early.overall == Tally(promoters=2, detractors=1)
    assert [m.start for m in early.by_month] == [date(2026, 1, 1), date(2026, 2, 1),
                                                 date(2026, 3, 1)]
    # January A's 0; February D's 6; March (Moscow) A's 10 and E's 10.
    assert [m.tally for m in early.by_month] == [Tally(detractors=1), Tally(detractors=1),
                                                 Tally(promoters=2)]


def test_month_starts_follow_the_program_zone() -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Moscow")
    assert month_starts(at(1, 15), at(3, 31, 20, 59), zone) == [
        date(2026, 1, 15), date(2026, 2, 1), date(2026, 3, 1)]
    # 21:00 UTC on 31 March is 1 April in Moscow: April has begun.
    assert month_starts(at(1, 15), at(3, 31, 21, 1), zone)[-1] == date(2026, 4, 1)


# -- recording --------------------------------------------------------------------------------
def test_one_answer_per_source_event(services: Services) -> None:
    first = answer(services, A, 8, at(3, 1), "deal:7:8")
    again = answer(services, A, "8", at(3, 2), "deal:7:8")
    assert not first.duplicate and again.duplicate and again.answer_id == first.answer_id
    assert again.occurred_at == at(3, 1)  # the first record stands
    with pytest.raises(IdempotencyConflictError):
        answer(services, A, 9, at(3, 2), "deal:7:8")
    with services.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(NPSAnswer)) == 1


def test_a_deal_field_back_to_an_earlier_score_is_a_new_answer(services: Services,
                                                               clock: Clock) -> None:
    """The field read on every event of deal 7: 8, 8 (another edit), 3, then 8 again (the
    customer asked again) are three answers, the latest an 8; deal 70's 8 is its own."""
    from connector.nps.capture import from_field

    def read(value: str, deal: str = "7") -> Recorded | None:
        clock.advance(minutes=1)
        return from_field(services, A, value, source="bitrix24:field",
                          entity=f"bitrix24:{PORTAL}:deal:{deal}", raw={"ID": deal}, actor="t")

    first = read("8")
    assert first is not None and not first.duplicate
    again = read("8")
    assert again is not None and again.duplicate and again.answer_id == first.answer_id
    assert read("3") is not None
    back = read("8")
    assert back is not None and not back.duplicate and back.answer_id != first.answer_id
    assert getattr(read("8.0"), "answer_id", None) == back.answer_id
    figures = report(services, at(1, 1), clock() + timedelta(minutes=1))
    assert figures.overall == Tally(passives=1) and figures.answers == 3  # A's latest: 8
    other = read("8", deal="70")
    assert other is not None and other.answer_id not in (first.answer_id, back.answer_id)
    with services.db.transaction(write=False) as session:
        scores = session.scalars(select(NPSAnswer.score).order_by(NPSAnswer.id)).all()
    assert scores == [8, 3, 8, 8]


def test_parallel_reads_of_one_deal_field_store_one_answer(services: Services) -> None:
    """The same deal delivered by several workers at once: one answer, one bonus."""
    from connector.nps.capture import from_field

    def read(_: int) -> Recorded | None:
        return from_field(services, A, "6", source="amocrm:field",
                          entity="amocrm:acme:lead:5", raw={"id": 5}, actor="t")

    outcomes = in_parallel(8, read)
    recorded = [o for o in outcomes if isinstance(o, Recorded)]
    assert len(recorded) == 8, outcomes
    assert len({o.answer_id for o in recorded}) == 1
    assert services.ledger.account(A).balance == D("50.00")


def test_the_raw_record_is_kept_beside_the_answer(services: Services) -> None:
    raw = {"ID": "7", "UF_CRM_LOYALTY_NPS": "9"}
    services.nps.record(A, "9", source="bitrix24:field", source_key="k", raw=raw)
    with services.db.transaction(write=False) as session:
        stored = session.scalars(select(NPSAnswer)).one()
    assert (stored.score, stored.source, stored.raw) == (9, "bitrix24:field", raw)


def test_bonus_once_per_period(services: Services) -> None:
    """90-day windows from 1970-01-01 in Moscow time: 8 Dec 2025 - 7 Mar 2026, then
    8 Mar - 5 Jun 2026."""
    first = answer(services, A, 9, at(2, 10), "a1")
    assert first.bonus_points == D("50.00") and first.period_start == date(2025, 12, 8)
    same = answer(services, A, 3, at(3, 7, 20, 59), "a2")  # 23:59 on 7 March in Moscow
    assert same.bonus_points == D("0") and same.bonus_entry_id is None
    following = answer(services, A, 10, at(3, 7, 21, 0), "a3")  # 00:00 on 8 March
    assert following.bonus_points == D("50.00")
    assert following.period_start == date(2026, 3, 8)
    replay = answer(services, A, 9, at(2, 10), "a1")  # the first again: its bonus, not a new one
    assert replay.duplicate and replay.bonus_entry_id == first.bonus_entry_id
    assert answer(services, B, 0, at(3, 7, 20, 59), "b1").bonus_points == D("50.00")
    assert services.ledger.account(A).balance == D("100.00")
    with services.db.transaction(write=False) as session:
        entries = session.scalars(select(Entry).where(Entry.kind == "bonus")
                                  .order_by(Entry.id)).all()
        assert [(e.details or {}).get("bonus") for e in entries] == ["nps"] * 3
        keys = [e.idempotency_key for e in entries]
    assert keys[0].endswith(":90d:2025-12-08") and keys[1].endswith(":90d:2026-03-08")


def test_a_bonus_granted_but_not_noted_is_noted_by_the_replay(services: Services) -> None:
    """The process stopped between the bonus entry and noting it on the answer: the same
    source event again notes it, and grants nothing more."""
    first = answer(services, A, 9, at(2, 10), "a1")
    with services.db.transaction() as session:
        session.execute(update(NPSAnswer).values(bonus_entry_id=None))
    replay = answer(services, A, 9, at(2, 10), "a1")
    assert replay.duplicate and replay.bonus_entry_id == first.bonus_entry_id
    assert replay.bonus_points == D("50.00")
    other = answer(services, A, 4, at(2, 11), "a2")  # the period's bonus is a1's, not a2's
    assert other.bonus_entry_id is None and other.bonus_points == D("0")
    assert services.ledger.account(A).balance == D("50.00")


def test_no_bonus_configured_no_entry(services: Services, settings: Any) -> None:
    services.nps.settings = settings.program.nps.model_copy(update={"bonus": D(0)})
    assert answer(services, A, 9, at(2, 10), "a1").bonus_points == D("0")
    assert services.ledger.account(A).balance == D("0.00")


def test_parallel_answers_earn_one_bonus(services: Services) -> None:
    outcomes = in_parallel(12, lambda i: answer(services, A, i % 11, at(3, 1, 9, i), f"p{i}"))
    assert all(isinstance(o, Recorded) for o in outcomes), outcomes
    granted = [o for o in outcomes if isinstance(o, Recorded) and o.bonus_entry_id]
    assert len(granted) == 1 and granted[0].bonus_points == D("50.00")
    assert services.ledger.account(A).balance == D("50.00")
    with services.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(NPSAnswer)) == 12
        assert session.scalar(select(func.count()).select_from(Entry)) == 1
    assert services.ledger.verify()[1] == []


def test_parallel_repeats_of_one_event_store_one_answer(services: Services) -> None:
    outcomes = in_parallel(8, lambda i: answer(services, A, 7, at(3, 1), "same"))
    recorded = [o for o in outcomes if isinstance(o, Recorded)]
    assert len(recorded) == 8, outcomes
    assert len({o.answer_id for o in recorded}) == 1
    assert sum(not o.duplicate for o in recorded) == 1
    assert services.ledger.account(A).balance == D("50.00")


# -- the admin API ----------------------------------------------------------------------------
ANNA = {"crm": "bitrix24", "portal": PORTAL, "contact_id": "101"}


def test_api_records_an_answer_once(api: Api, clock: Clock) -> None:
    made = api.post("/api/v1/nps", {**ANNA, "score": 9}, key="survey-1")
    assert made.status_code == 201, made.json
    assert made.json["score"] == 9 and made.json["category"] == "promoter"
    assert made.json["bonus_points"] == "50.00" and made.json["duplicate"] is False
    again = api.post("/api/v1/nps", {**ANNA, "score": 9}, key="survey-1")
    assert again.status_code == 200 and again.json["duplicate"] is True
    assert again.json["answer_id"] == made.json["answer_id"]
    other = api.post("/api/v1/nps", {**ANNA, "score": 3}, key="survey-1")
    assert other.status_code == 409 and other.json["error"] == "idempotency_conflict"
    back = api.post("/api/v1/nps", {**ANNA, "score": 6, "occurred_at": "2026-01-15T10:00"},
                    key="survey-0")
    assert back.status_code == 201 and back.json["occurred_at"] == "2026-01-15T07:00:00+00:00"
    # 10 March falls in 8 Mar - 5 Jun 2026, 15 January in 8 Dec 2025 - 7 Mar 2026: two bonuses.
    assert api.balance(ANNA) == "100.00"
    clock.advance(minutes=1)
    report = api.get("/api/v1/nps?days=30")
    assert report.status_code == 200
    assert (report.json["nps"], report.json["answers"]) == ("100.0", 1)
    year = api.get("/api/v1/nps?days=365").json
    assert (year["nps"], year["answers_all"]) == ("100.0", 2)  # Anna's latest: the 9
    assert year["by_tier"]["Bronze"]["promoters"] == 1


def test_api_needs_the_admin_token(api: Api, services: Services) -> None:
    """As the rest of /api/v1: no bearer token or a wrong one is a 401, and nothing is
    recorded."""
    body = {**ANNA, "score": 9, "key": "k"}
    assert api.client.get("/api/v1/nps").status_code == 401
    assert api.client.post("/api/v1/nps", json=body).status_code == 401
    wrong = api.client.post("/api/v1/nps", json=body, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401 and wrong.json["error"]
    with services.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(NPSAnswer)) == 0
    assert api.post("/api/v1/nps", body).status_code == 201


@pytest.mark.parametrize("score", [11, -1, 7.5, "8", True, None, [9]])
def test_api_refuses_a_bad_score_with_a_reason(api: Api, score: object) -> None:
    refused = api.post("/api/v1/nps", {**ANNA, "score": score}, key="k")
    assert refused.status_code == 400, refused.json
    assert refused.json["error"] in ("invalid_score", "invalid_request")
    assert "score" in refused.json["detail"]


def test_api_refuses_unknown_fields_and_the_future(api: Api) -> None:
    assert api.post("/api/v1/nps", {**ANNA, "score": 5, "scor": 5}, key="k").json[
        "detail"] == "scor: unknown field"
    future = api.post("/api/v1/nps", {**ANNA, "score": 5, "occurred_at": "2030-01-01T00:00Z"},
                      key="k")
    assert future.status_code == 400 and "future" in future.json["detail"]
    assert api.get("/api/v1/nps?day=3").status_code == 400
    bad_date = api.post("/api/v1/nps", {**ANNA, "score": 5, "occurred_at": "2026-13-45T99:99"},
                        key="k")
    assert bad_date.status_code == 400 and "occurred_at" in bad_date.json["detail"]


def test_erasing_the_customer_clears_the_raw_records_and_keeps_the_scores(
        services: Services) -> None:
    from connector.privacy.erase import erase

    services.nps.record(A, 9, source="bitrix24:field", source_key="k1",
                        raw={"ID": "7", "NAME": "Anna"})
    report = erase(services.db, A, reason="asked", by="test", clock=services.ledger.clock)
    assert report.removed["nps_answers"] == 1
    with services.db.transaction(write=False) as session:
        stored = session.scalars(select(NPSAnswer)).one()
    assert stored.raw is None and stored.score == 9
