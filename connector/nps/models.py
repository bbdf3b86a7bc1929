"""nps_answers: one row per answer, UNIQUE per source event, so a replayed webhook, robot call
or API request never counts twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime

SCORE_MIN, SCORE_MAX = 0, 10


class NPSAnswer(Base):
    __tablename__ = "nps_answers"
    __table_args__ = (
        CheckConstraint(f"score >= {SCORE_MIN} AND score <= {SCORE_MAX}", name="score_0_to_10"),
        Index("ix_nps_answers_occurred", "occurred_at"),
        Index("ix_nps_answers_account_occurred", "account_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    score: Mapped[int] = mapped_column(SmallInteger)
    # Where it came from: bitrix24:field, bitrix24:robot, bitrix24:action, amocrm:field,
    # amocrm:action, api, cli.
    source: Mapped[str] = mapped_column(String(32))
    # The source event (a deal and its answer, a robot's event token, an API key): the
    # same event twice is the same answer.
    source_key: Mapped[str] = mapped_column(String(255), unique=True)
    # The record the answer was read from (the deal's fields, the robot's properties, the
    # request), kept beside it to check a figure against what the CRM said.
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The bonus entry this answer earned; NULL: none (no bonus configured, or the period's
    # bonus already granted for an earlier answer).
    bonus_entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
