"""Finding CRM contacts by phone or e-mail, through the CRM's client (so every call is
reserved in the portal's shared budget, connector/crm/budget.py).

Bitrix24: `crm.duplicate.findbycomm` (entity_type CONTACT) finds contacts whose phone or
e-mail is one of the values given, the portal normalising phone formats. Its answer is one
list for all the values asked, so each value is asked on its own, 50 of them in one `batch`
call (a batch counts as one request against the limit): 2,500 phones cost 50 calls.

amoCRM: `GET /api/v4/contacts?query=VALUE` searches the contacts' filled fields, one value a
call (the API has no search for several values at once) at the account's 7 requests/s. The
search is loose (a part of a number or a name matches too), so a contact counts only when
one of its PHONE / EMAIL values is the one asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

from connector.crm.amocrm import AmoCRMClient
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.errors import RetriableCRMError
from connector.imports.parse import phone_digits

Kind = Literal["phone", "email"]
Progress = Callable[[int], None]


class LookupFailed(Exception):
    """The CRM could not answer for one value (the row is refused with this reason)."""


def unreachable(crm: str, exc: RetriableCRMError) -> LookupFailed:
    """The CRM did not answer (after the client's own retries): the values not yet looked
    up are not asked either (each would wait out the same retries), and their rows are
    refused with this; the rows naming a contact id go on."""
    return LookupFailed(f"{crm} is unreachable ({exc.detail}); import these rows again "
                        "later")


class Matcher(Protocol):
    def find(self, kind: Kind, values: list[str], progress: Progress
             ) -> dict[str, list[str] | LookupFailed]:
        """Each value -> the ids of the contacts that have it (or why it could not be
        looked up)."""


def _same(kind: Kind, asked: str, found: str) -> bool:
    if kind == "email":
        return asked.lower() == found.strip().lower()
    return phone_digits(asked) == phone_digits(found)


class Bitrix24Matcher:
    def __init__(self, client: Bitrix24Client) -> None:
        self.client = client

    def find(self, kind: Kind, values: list[str], progress: Progress
             ) -> dict[str, list[str] | LookupFailed]:
        found: dict[str, list[str] | LookupFailed] = {}
        for start in range(0, len(values), BATCH_LIMIT):
            chunk = values[start:start + BATCH_LIMIT]
            try:
                result = self.client.batch({
                    f"v{n}": ("crm.duplicate.findbycomm",
                              {"entity_type": "CONTACT", "type": kind.upper(),
                               "values": [value]})
                    for n, value in enumerate(chunk)})
            except RetriableCRMError as exc:
                failed = unreachable("bitrix24", exc)
                found.update((value, failed) for value in values[start:])
                progress(len(values) - start)
                break
            for n, value in enumerate(chunk):
                error = result.errors.get(f"v{n}")
                if error is not None:
                    found[value] = LookupFailed(
                        f"crm.duplicate.findbycomm: {error.get('error_description') or error}")
                    continue
                answer = result.results.get(f"v{n}")
                # An empty result is PHP's empty array: [] rather than {}.
                ids = answer.get("CONTACT", []) if isinstance(answer, dict) else []
                found[value] = sorted({str(i) for i in ids}, key=int)
            progress(len(chunk))
        return found


class AmoCRMMatcher:
    def __init__(self, client: AmoCRMClient) -> None:
        self.client = client

    def find(self, kind: Kind, values: list[str], progress: Progress
             ) -> dict[str, list[str] | LookupFailed]:
        found: dict[str, list[str] | LookupFailed] = {}
        code = kind.upper()
        for done, value in enumerate(values):
            query = phone_digits(value) if kind == "phone" else value
            try:
                body = self.client.request("GET", "/api/v4/contacts",
                                           params={"query": query, "limit": 250})
            except RetriableCRMError as exc:
                failed = unreachable("amocrm", exc)
                found.update((rest, failed) for rest in values[done:])
                progress(len(values) - done)
                break
            contacts = ((body or {}).get("_embedded") or {}).get("contacts") or []
            found[value] = sorted(
                {str(contact["id"]) for contact in contacts
                 if any(_same(kind, value, text) for text in _field_texts(contact, code))},
                key=int)
            progress(1)
        return found


def _field_texts(contact: dict[str, Any], code: str) -> Iterable[str]:
    for item in contact.get("custom_fields_values") or []:
        if item.get("field_code") == code:
            for value in item.get("values") or []:
                if value.get("value") is not None:
                    yield str(value["value"])
