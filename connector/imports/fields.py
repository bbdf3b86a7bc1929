"""Balances kept in a CRM contact field (a home-made widget's, say), read as import rows:
every contact with a value in the field becomes a row of its contact id and that balance.

Read through the CRM's client, so within the portal's shared budget: Bitrix24 pages
`crm.contact.list` (50 a call, ID order, `start=-1`) selecting only ID and the field;
amoCRM pages `GET /api/v4/contacts` (250 a call) and takes the field by its code, or by its
id when CODE is a number (a field made by hand in amoCRM has no code).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.crm.amocrm import AmoCRMClient
from connector.crm.bitrix24 import Bitrix24Client
from connector.imports.rows import ImportFileError, RawRow


def bitrix24_rows(client: Bitrix24Client, code: str) -> Iterator[RawRow]:
    field = code.upper()
    if not field.startswith("UF_"):
        raise ImportFileError(f"{code}: a Bitrix24 contact field is named UF_CRM_...")
    known = {str(item.get("FIELD_NAME")) for item in client.pages(
        "crm.contact.userfield.list", {"filter": {"FIELD_NAME": field}})}
    if field not in known:
        raise ImportFileError(f"{field}: Bitrix24 has no such contact field "
                              "(crm.contact.userfield.list)")
    line = 0
    for contact in client.list_all("crm.contact.list", select=["ID", field]):
        value = contact.get(field)
        if _empty(value):
            continue
        line += 1
        yield RawRow(line, {"contact_id": str(contact["ID"]), "balance": str(value)})


def amocrm_rows(client: AmoCRMClient, code: str) -> Iterator[RawRow]:
    fields = [item for page in client.pages("/api/v4/contacts/custom_fields",
                                            "custom_fields") for item in page]
    match = [item for item in fields if str(item.get("code") or "") == code
             or str(item.get("id")) == code]
    if not match:
        raise ImportFileError(f"{code}: amoCRM has no contact field with this code or id")
    field_id = match[0]["id"]
    line = 0
    for page in client.pages("/api/v4/contacts", "contacts"):
        for contact in page:
            value = _amocrm_value(contact, field_id)
            if _empty(value):
                continue
            line += 1
            yield RawRow(line, {"contact_id": str(contact["id"]), "balance": str(value)})


def _amocrm_value(contact: dict[str, Any], field_id: Any) -> Any:
    for item in contact.get("custom_fields_values") or []:
        if item.get("field_id") == field_id:
            values = item.get("values") or []
            return values[0].get("value") if values else None
    return None


def _empty(value: Any) -> bool:
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return Decimal(str(value).replace(",", ".").replace(" ", "")) == 0
    except InvalidOperation:
        return False  # not a number: the row is refused with the reason
