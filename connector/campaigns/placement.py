"""Writing customers' groups down: once per test, when the customer is first eligible."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.campaigns.groups import CONTROL, Group, group
from connector.campaigns.models import CampaignGroup
from connector.config import ProgramSettings, TriggerHoldout

if TYPE_CHECKING:
    from connector.ledger.models import Entry
    from connector.products.rows import Row
    from connector.program import Program


def place(session: Session, name: str, kind: str, account_id: int, grp: Group, *,
          at: datetime) -> bool:
    """Record the customer's group in test `name` unless already recorded; True when new.
    The insert runs in a savepoint: a concurrent writer that placed the customer first
    (two triggers of one code, different transitions, on PostgreSQL) makes it fail on the
    UNIQUE, and only the savepoint is undone, not the caller's transaction (the trigger
    itself, the purchase)."""
    known = session.scalar(select(CampaignGroup.id).where(
        CampaignGroup.campaign == name, CampaignGroup.account_id == account_id))
    if known is not None:
        return False
    try:
        with session.begin_nested():
            session.add(CampaignGroup(campaign=name, kind=kind, account_id=account_id,
                                      grp=grp, first_seen_at=at))
    except IntegrityError:
        return False
    return True


def trigger_holdout(program: ProgramSettings, code: str) -> TriggerHoldout | None:
    return next((h for h in program.trigger_holdouts if h.trigger == code), None)


def withheld(program: ProgramSettings, session: Session, code: str, account_id: int,
             at: datetime) -> bool:
    """For a trigger with a control group: place the customer (at the trigger's moment) and
    say whether the trigger is withheld from them. A customer already placed stays in the
    group written, even if the holdout's share has changed since: the report counts them
    there, so sending them the trigger now would blur the comparison."""
    holdout = trigger_holdout(program, code)
    if holdout is None:
        return False
    written = session.scalar(select(CampaignGroup.grp).where(
        CampaignGroup.campaign == code, CampaignGroup.account_id == account_id))
    if written is not None:
        return written == CONTROL
    grp = group(code, account_id, holdout.holdout)
    place(session, code, "trigger", account_id, grp, at=at)
    return grp == CONTROL


def repriced(program: Program, tests: dict[str, Any] | None, entries: Iterable[Entry],
             points: Decimal, amount: Decimal, rows: Sequence[Row] | None
             ) -> dict[str, dict[str, str]]:
    """A re-priced purchase's change in what each test gave (its cost): the points now
    minus those by the terms without the test, less what the source's entries recorded."""
    out: dict[str, dict[str, str]] = {}
    listed = list(entries)
    for name, test in (tests or {}).items():
        if "base_rate" not in test:
            continue  # control, or an accrual from before: nothing to follow
        rate, multiplier = Decimal(test["base_rate"]), Decimal(test["base_multiplier"])
        base = program.points_for_rows(rows, rate, multiplier) if rows \
            else program.points_for(amount, rate, multiplier)
        now = points - base + Decimal(test.get("fixed", "0"))
        given = sum((Decimal((((e.details or {}).get("tests") or {}).get(name) or {})
                             .get("points", "0")) for e in listed), Decimal(0))
        if now != given:
            out[name] = {"group": test["group"], "points": str(now - given)}
    return out


def given(entries: Iterable[Entry]) -> dict[str, tuple[str, Decimal]]:
    """What each test gave the source so far, net of re-pricings and returns: name ->
    (group, points)."""
    out: dict[str, tuple[str, Decimal]] = {}
    for entry in entries:
        for name, test in (((entry.details or {}).get("tests")) or {}).items():
            grp, points = out.get(name, (test["group"], Decimal(0)))
            out[name] = (grp, points + Decimal(test.get("points", "0")))
    return out


def undone(entries: Iterable[Entry]) -> dict[str, dict[str, str]]:
    """For a reversal of everything a source earned: each test's points taken back, so a
    purchase cancelled (and perhaps accrued again later) costs the test only what stands."""
    return {name: {"group": grp, "points": str(-points)}
            for name, (grp, points) in given(entries).items() if points}


def shrunk(tests: dict[str, Any] | None, entries: Iterable[Entry], take: int, held: int
           ) -> dict[str, dict[str, str]]:
    """A return from a purchase that earned by its rows: each test's points shrink by the
    share `take` / `held` of the rows' points (hundredths) the return takes back. The share
    is exact for a campaign's multiplier (every row earns the same times more); for an A/B
    rate under product rules of fixed rates it is a close estimate. Fixed extra points stay
    with the purchase, as the points do, until its last return."""
    if take <= 0 or held <= 0:
        return {}
    out: dict[str, dict[str, str]] = {}
    so_far = given(entries)
    for name, test in (tests or {}).items():
        if "base_rate" not in test or name not in so_far:
            continue
        grp, points = so_far[name]
        variable = points - Decimal(test.get("fixed", "0"))
        change = (variable * take / held).quantize(Decimal("0.01"))
        if change:
            out[name] = {"group": grp, "points": str(-change)}
    return out
