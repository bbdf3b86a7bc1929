"""The erasure log: one row per erasure, who and why and how much was removed. It holds no
personal data: not the contact id erased (the anonymous id the account now has stands for
it), so the log itself never needs erasing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime


class Erasure(Base):
    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    crm: Mapped[str] = mapped_column(String(16))
    portal: Mapped[str] = mapped_column(String(255))
    # NULL when the contact had no account and only received events about it were scrubbed.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    anonymous_id: Mapped[str | None] = mapped_column(String(64))
    erased_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    # What was removed, as counts: {"entries": 3, "inbox_events": 2, "card_link": 1, ...}.
    removed: Mapped[dict[str, Any]] = mapped_column(JSON)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime)
