"""Recording an answer, once per source event, and the bonus for answering.

The bonus is a ledger `bonus` entry (named `nps`) whose idempotency key names the account and
the period the answer falls in: the entries table's UNIQUE key lets one grant stand per account
and period however many answers come at once, on SQLite and PostgreSQL alike. Periods are
fixed windows of `period_days` counted from 1970-01-01 in the program's time zone, so the key
of an answer is known from the answer alone (no read-then-write race).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from connector.config import NPSSettings
from connector.db import Database
from connector.errors import IdempotencyConflictError, InvalidScoreError
from connector.ledger.engine import Ledger
from connector.ledger.models import Entry
from connector.ledger.views import AccountRef
from connector.money import from_minor
from connector.nps.models import SCORE_MAX, SCORE_MIN, NPSAnswer

BONUS_NAME = "nps"
EPOCH = date(1970, 1, 1)
# A CRM shows a number field as 8, "8" or "8.0"; nothing else is an answer.
SCORE_TEXT = re.compile(r"\s*([0-9]{1,2})(?:\.0*)?\s*")
SOURCES = ("bitrix24:field", "bitrix24:robot", "bitrix24:action", "amocrm:field",
           "amocrm:action", "api", "cli")


def parse_score(value: object) -> int:
    """A whole number from 0 to 10 (an int, or text a CRM field holds); InvalidScoreError
    (400 in the API) for anything else."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral():
        number = int(value)
    elif isinstance(value, str) and (match := SCORE_TEXT.fullmatch(value)):
        number = int(match.group(1))
    if number is None or not SCORE_MIN <= number <= SCORE_MAX:
        shown = repr(value)[:40]
        raise InvalidScoreError(f"score: a whole number from {SCORE_MIN} to {SCORE_MAX} is "
                                f"needed, not {shown}", score=shown)
    return number


def category(score: int) -> str:
    """promoter (9-10), passive (7-8) or detractor (0-6)."""
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


@dataclass(frozen=True)
class Recorded:
    answer_id: int
    account_id: int
    score: int
    source: str
    occurred_at: datetime
    duplicate: bool  # the source event was recorded before: nothing new was written
    bonus_points: Decimal  # what this answer earned (0: none, or the period's already given)
    bonus_entry_id: int | None
    period_start: date  # the bonus period the answer falls in

    @property
    def category(self) -> str:
        return category(self.score)

    def as_json(self) -> dict[str, Any]:
        return {"answer_id": self.answer_id, "account_id": self.account_id,
                "score": self.score, "category": self.category, "source": self.source,
                "occurred_at": self.occurred_at.isoformat(), "duplicate": self.duplicate,
                "bonus_points": str(self.bonus_points), "bonus_entry_id": self.bonus_entry_id,
                "bonus_period_start": self.period_start.isoformat()}


class Answers:
    def __init__(self, db: Database, ledger: Ledger, settings: NPSSettings, zone: ZoneInfo,
                 *, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.ledger = ledger
        self.settings = settings
        self.zone = zone
        self.clock = clock

    def period_start(self, at: datetime) -> date:
        """The first local day of the bonus period `at` falls in."""
        days = (at.astimezone(self.zone).date() - EPOCH).days
        return EPOCH + timedelta(days=days - days % self.settings.period_days)

    def record(self, ref: AccountRef, score: object, *, source: str, source_key: str,
               raw: dict[str, Any] | None = None, occurred_at: datetime | None = None,
               actor: str | None = None) -> Recorded:
        """Store the answer once per `source_key` and grant the period's bonus if it is
        still due. A repeat of the key with another account or score is a conflict."""
        value = parse_score(score)
        if source not in SOURCES:
            raise ValueError(f"unknown NPS source {source!r}")
        if not source_key or len(source_key) > 255:
            raise ValueError("an answer needs a source key of 1 to 255 characters")
        at = (occurred_at or self.clock()).astimezone(UTC)
        account_id = self.ledger.open_account(ref)
        answer, duplicate = self._store(account_id, value, source, source_key, raw, at)
        if answer.account_id != account_id or answer.score != value:
            raise IdempotencyConflictError(
                f"key {source_key!r} already recorded another answer ({answer.score}); "
                "send a new key for a new answer", key=source_key)
        start = self.period_start(answer.occurred_at)
        points, entry_id = self._bonus(ref, answer, start, actor)
        return Recorded(answer.id, answer.account_id, answer.score, answer.source,
                        answer.occurred_at, duplicate, points, entry_id, start)

    def record_field(self, ref: AccountRef, score: int, *, source: str, entity: str,
                     raw: dict[str, Any] | None, actor: str) -> Recorded:
        """The value of a deal's (lead's) NPS field, read on every event of the deal: a new
        answer when it differs from the last answer read from this deal (another score, or
        another contact), else that answer again. A customer asked again who moves the deal
        from 8 to 3 and back to 8 has answered three times, the latest an 8."""
        prefix = f"{entity}:nps:"
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        account_id = self.ledger.open_account(ref)
        with self.db.transaction(write=False) as session:
            read = session.execute(
                select(NPSAnswer.account_id, NPSAnswer.score, NPSAnswer.source_key)
                .where(NPSAnswer.source == source,
                       NPSAnswer.source_key.like(pattern, escape="\\"))
                .order_by(NPSAnswer.id.desc())).all()
        if read and (read[0].account_id, read[0].score) == (account_id, score):
            key = read[0].source_key
        else:
            # Numbered: the same score after another one is a new key. Two workers reading
            # the same change make the same key, and the UNIQUE key keeps one answer.
            key = f"{prefix}{len(read) + 1}:{score}"
        return self.record(ref, score, source=source, source_key=key, raw=raw, actor=actor)

    def _store(self, account_id: int, score: int, source: str, source_key: str,
               raw: dict[str, Any] | None, at: datetime) -> tuple[NPSAnswer, bool]:
        try:
            with self.db.transaction() as session:
                existing = session.scalar(select(NPSAnswer).where(
                    NPSAnswer.source_key == source_key))
                if existing is not None:
                    session.expunge(existing)
                    return existing, True
                answer = NPSAnswer(account_id=account_id, score=score, source=source,
                                   source_key=source_key, raw=raw, occurred_at=at,
                                   created_at=self.clock())
                session.add(answer)
                session.flush()
                session.expunge(answer)
                return answer, False
        except IntegrityError:
            # The same event recorded at the same moment by another worker: its row stands.
            with self.db.transaction(write=False) as session:
                existing = session.scalar(select(NPSAnswer).where(
                    NPSAnswer.source_key == source_key))
                if existing is None:
                    raise
                session.expunge(existing)
                return existing, True

    def bonus_key(self, account_id: int, start: date) -> str:
        # period_days is in the key: a changed period starts a new series of windows.
        return f"nps:bonus:{account_id}:{self.settings.period_days}d:{start.isoformat()}"

    def _bonus(self, ref: AccountRef, answer: NPSAnswer, start: date,
               actor: str | None) -> tuple[Decimal, int | None]:
        """(points this answer earned, its entry). Asked again for a repeated event too: a
        crash after the answer and before the bonus is made good by the replay."""
        if answer.bonus_entry_id is not None:
            with self.db.transaction(write=False) as session:
                entry = session.get(Entry, answer.bonus_entry_id)
                return (from_minor(entry.amount) if entry else Decimal(0),
                        answer.bonus_entry_id)
        if self.settings.bonus <= 0:
            return Decimal(0), None
        result = self.ledger.grant_bonus(
            ref, BONUS_NAME, key=self.bonus_key(answer.account_id, start),
            points=self.settings.bonus, actor=actor or answer.source,
            comment=f"NPS answer {answer.score}",
            source_data={"nps_answer": answer.id, "period_start": start.isoformat()})
        if result.entry_id is None:
            return Decimal(0), None
        if result.duplicate:
            # The period's bonus stands already: another answer's, or this one's when the
            # process stopped before noting it (then it is noted now).
            with self.db.transaction(write=False) as session:
                entry = session.get(Entry, result.entry_id)
                earned_here = entry is not None and \
                    (entry.source_data or {}).get("nps_answer") == answer.id
            if not earned_here:
                return Decimal(0), None
        with self.db.transaction() as session:
            session.execute(update(NPSAnswer).where(NPSAnswer.id == answer.id)
                            .values(bonus_entry_id=result.entry_id))
        return result.points, result.entry_id
