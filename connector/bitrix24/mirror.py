"""What the connector last wrote to each contact, so it writes only changes and recognises
the contact-update events its own writes cause."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from connector.crm.models import ContactMirror
from connector.db import Database
from mappings.bitrix24 import changed_values


def _row(session: Any, account_id: int) -> ContactMirror:
    row = session.get(ContactMirror, account_id, with_for_update=True)
    if row is None:
        row = ContactMirror(account_id=account_id, written_version=0, values={})
        session.add(row)
    return row


def remember_deal(db: Database, account_id: int, deal_id: str) -> None:
    """Keep the contact's most recent deal: automation triggers run on deals."""
    with db.transaction() as session:
        row = _row(session, account_id)
        current = row.latest_deal_id
        if current is None or int(deal_id) > int(current):
            row.latest_deal_id = deal_id


def latest_deals(db: Database, account_ids: list[int]) -> dict[int, str]:
    with db.transaction(write=False) as session:
        rows = session.execute(select(ContactMirror.account_id, ContactMirror.latest_deal_id)
                               .where(ContactMirror.account_id.in_(account_ids)))
        return {account_id: deal for account_id, deal in rows if deal}


def note_crm_values(db: Database, account_id: int, in_crm: Mapping[str, Any],
                    field_names: list[str]) -> bool:
    """A contact changed in the CRM. If our fields there differ from what we last wrote
    (someone edited them), remember the CRM's values and ask write-back to correct them.
    Our own writes echo back unchanged, so they cause nothing: no loop."""
    shown = {name: in_crm.get(name) for name in field_names}
    with db.transaction() as session:
        row = _row(session, account_id)
        if not changed_values({k: str(v or "") for k, v in (row.values or {}).items()}, shown):
            return False
        row.values = {name: "" if value is None else str(value) for name, value in shown.items()}
        row.written_version = 0
        return True
