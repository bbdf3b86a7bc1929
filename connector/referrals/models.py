"""What happened to each referral: linked, skipped (and why), rewarded or capped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime

# linked: the newcomer now belongs to the referrer. The rest leave the account as it was:
# invalid (not a code at all), unknown (names nobody), self, cycle, purchased (the newcomer
# bought before the code came), taken (already referred by someone else). capped: the link
# stands but the referrer's monthly cap left no reward.
OUTCOMES = ("linked", "invalid", "unknown", "self", "cycle", "purchased", "taken", "capped")


class ReferralEvent(Base):
    __tablename__ = "referral_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    code: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    # Where the code came from: "bitrix24:contact", "amocrm:contact", "api", "robot".
    via: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
