"""The card link of each account: the random salt its token is derived with, and the
token's hash to find the account by (see connector.card.tokens for why both)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, UTCDateTime


class CardLink(Base):
    __tablename__ = "card_links"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    salt: Mapped[str] = mapped_column(String(32))
    # sha256 of the token, hex: a page request is one indexed lookup of its token's hash.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # How many times the link was rotated: the CLI and API report it.
    rotations: Mapped[int] = mapped_column(Integer, default=0)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
