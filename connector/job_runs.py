"""What each scheduled job did last: one row per job, shared by every process.

`jobs` prints it and /metrics exports it. A run that started and never finished (the process
died) shows as `running` with its start time; the next run simply starts over, which is safe
because every job is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from connector.db import Database
from connector.schema import Base, UTCDateTime

RUN_STATUSES = ("running", "ok", "failed")


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (CheckConstraint(f"last_status IN {RUN_STATUSES!r}", name="status_known"),)

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_duration_seconds: Mapped[float | None] = mapped_column(Float)
    last_status: Mapped[str] = mapped_column(String(16))
    last_result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Who ran it (host:pid): tells an admin which scheduler was the leader.
    last_runner: Mapped[str | None] = mapped_column(String(128))


@dataclass(frozen=True)
class RunRecord:
    job_id: str
    runs: int
    failures: int
    last_started_at: datetime
    last_finished_at: datetime | None
    last_duration_seconds: float | None
    last_status: str
    last_result: dict[str, Any] | None
    last_error: str | None
    last_runner: str | None


def started(db: Database, job_id: str, at: datetime, runner: str) -> None:
    """Mark a run as begun: if the process dies now, the row says so."""
    with db.transaction() as session:
        row = _row(session, job_id)
        row.last_started_at = at
        row.last_finished_at = None
        row.last_duration_seconds = None
        row.last_status = "running"
        row.last_error = None
        row.last_runner = runner


def finished(db: Database, job_id: str, *, started_at: datetime, at: datetime, seconds: float,
             runner: str, result: dict[str, Any] | None = None,
             error: str | None = None) -> None:
    # Not durable: the record of a run (the inbox's every few seconds) is for `jobs` and
    # /metrics; one lost with the database server costs nothing but the count.
    with db.transaction(durable=False) as session:
        row = _row(session, job_id)
        row.runs += 1
        row.failures += error is not None
        row.last_started_at = started_at
        row.last_finished_at = at
        row.last_duration_seconds = seconds
        row.last_status = "failed" if error is not None else "ok"
        row.last_result = result
        row.last_error = error
        row.last_runner = runner


def _row(session: Session, job_id: str) -> JobRun:
    row = session.get(JobRun, job_id, with_for_update=True)
    if row is None:
        row = JobRun(job_id=job_id, runs=0, failures=0)
        session.add(row)
    return row


def all_runs(db: Database) -> dict[str, RunRecord]:
    with db.transaction(write=False) as session:
        return {row.job_id: RunRecord(
            row.job_id, row.runs, row.failures, row.last_started_at, row.last_finished_at,
            row.last_duration_seconds, row.last_status, row.last_result, row.last_error,
            row.last_runner) for row in session.scalars(select(JobRun))}
