"""The anonymous contact id an erased account is kept under, and how queries leave erased
accounts out of everything that would reach the CRM (write-back, triggers, card links,
yearly bonuses, settling a CRM deal again)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import ColumnElement

PREFIX = "erased-"


def new_id() -> str:
    """64 random bits: no two erased accounts of a portal share an id (UNIQUE anyway)."""
    return f"{PREFIX}{secrets.token_hex(8)}"


def is_erased(contact_id: str) -> bool:
    return contact_id.startswith(PREFIX)


def not_erased(contact_id: Any) -> ColumnElement[bool]:
    """A WHERE clause on an accounts.contact_id column: the account was not erased."""
    return ~contact_id.startswith(PREFIX, autoescape=True)
