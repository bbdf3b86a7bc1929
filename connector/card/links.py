"""Each account's card page link: issued when first needed (write-back, `card link`),
rotated on demand, found again from a token. Tokens themselves are never stored
(connector.card.tokens says why).

A new or rotated link bumps the account's version, the counter write-back compares, so the
CRM's card_url field gets the new URL with the account's next write-back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.card import tokens
from connector.card.models import CardLink
from connector.config import Settings
from connector.db import Database
from connector.errors import ConfigError, LedgerError
from connector.ledger import queries
from connector.ledger.models import Account
from connector.ledger.views import AccountRef
from connector.privacy.anonymous import is_erased, not_erased

PATH = "/card/"
OFF = "card.secret: not set, so there are no card pages (set LOYALTY_CARD__SECRET, " \
      "32+ characters)"
CHUNK = 500


@dataclass(frozen=True)
class Link:
    account_id: int
    url: str
    rotations: int
    issued_at: datetime

    def as_json(self) -> dict[str, object]:
        return {"url": self.url, "rotations": self.rotations,
                "issued_at": self.issued_at.isoformat()}


class CardLinks:
    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.settings = settings.card
        self.base = settings.server.public_url.rstrip("/") + PATH
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def _secret(self) -> str:
        if self.settings.secret is None:
            raise ConfigError([OFF])
        return self.settings.secret.get_secret_value()

    def _link(self, row: CardLink) -> Link:
        token = tokens.derive(self._secret(), row.account_id, row.salt)
        return Link(row.account_id, self.base + token, row.rotations, row.issued_at)

    def _issue(self, session: Session, account_id: int, row: CardLink | None, *,
               announce: bool) -> CardLink:
        """A new salt for the account: a new link, the old one dead. `announce` bumps the
        account's version so write-back sends the new URL (write-back itself, issuing the
        link it is about to send, needs no bump)."""
        salt = tokens.new_salt()
        token = tokens.derive(self._secret(), account_id, salt)
        if row is None:
            row = CardLink(account_id=account_id, rotations=-1)
            session.add(row)
        row.salt, row.token_hash = salt, tokens.token_hash(token)
        row.rotations += 1
        row.issued_at = self.clock()
        if announce:
            session.execute(update(Account).where(Account.id == account_id)
                            .values(version=Account.version + 1, updated_at=self.clock())
                            .execution_options(synchronize_session=False))
        return row

    def _live(self, row: CardLink | None) -> bool:
        """The link exists and its stored hash is that of the token the current secret
        derives. After the secret was changed it is not: its old token stopped working with
        the change, and it is issued anew so that the CRM gets a working URL."""
        return row is not None and tokens.token_hash(
            tokens.derive(self._secret(), row.account_id, row.salt)) == row.token_hash

    def link(self, ref: AccountRef) -> Link:
        """The account's link (issued now if it has none); AccountNotFoundError if none."""
        self._secret()
        with self.db.transaction() as session:
            account = queries.find_account(session, ref)
            if is_erased(account.contact_id):
                raise LedgerError(f"{ref} was erased: it has no card page")
            row = session.get(CardLink, account.id, with_for_update=True)
            if not self._live(row):
                row = self._issue(session, account.id, row, announce=True)
            assert row is not None
            return self._link(row)

    def rotate(self, ref: AccountRef) -> Link:
        """A new link for the account; the old one answers 404 from now on."""
        self._secret()
        with self.db.transaction() as session:
            account = queries.find_account(session, ref)
            if is_erased(account.contact_id):
                raise LedgerError(f"{ref} was erased: it has no card page")
            row = session.get(CardLink, account.id, with_for_update=True)
            return self._link(self._issue(session, account.id, row, announce=True))

    def _rows(self, session: Session, account_ids: list[int]) -> dict[int, CardLink]:
        return {row.account_id: row for row in session.scalars(
            select(CardLink).where(CardLink.account_id.in_(account_ids)).with_for_update())}

    def _chunk(self, session: Session, account_ids: list[int], *,
               announce: bool) -> tuple[dict[int, CardLink], int]:
        rows = self._rows(session, account_ids)
        issued = 0
        for account_id in account_ids:
            if not self._live(rows.get(account_id)):
                rows[account_id] = self._issue(session, account_id, rows.get(account_id),
                                               announce=announce)
                issued += 1
        return rows, issued

    def urls(self, account_ids: Iterable[int]) -> dict[int, str]:
        """Each account's card page URL, for write-back (issuing the links that are
        missing); empty while card pages are off."""
        ids = list(account_ids)
        if not self.enabled or not ids:
            return {}
        found: dict[int, str] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            try:
                found.update(self._urls(chunk))
            except IntegrityError:
                # Another worker issued one of these links first: read it, do not replace it.
                found.update(self._urls(chunk))
        return found

    def _urls(self, account_ids: list[int]) -> dict[int, str]:
        with self.db.transaction() as session:
            rows, _ = self._chunk(session, account_ids, announce=False)
            return {account_id: self._link(row).url for account_id, row in rows.items()}

    def publish(self, crm: str, portal: str) -> int:
        """Issue the links the portal's accounts lack (or lost to a new secret), so that
        write-back puts them into the CRM: after card pages are turned on, or the secret was
        changed. Returns how many were issued; a second run issues none."""
        self._secret()
        issued, after = 0, 0
        while True:
            with self.db.transaction() as session:
                ids = list(session.scalars(
                    select(Account.id).where(Account.crm == crm, Account.portal == portal,
                                             Account.id > after,
                                             not_erased(Account.contact_id))
                    .order_by(Account.id).limit(CHUNK)))
                if not ids:
                    return issued
                issued += self._chunk(session, ids, announce=True)[1]
                after = ids[-1]

    def find(self, token: str) -> int | None:
        """The account whose live link has this token, or None."""
        secret = self._secret()
        if not tokens.well_formed(token):
            return None
        with self.db.transaction(write=False) as session:
            found = session.execute(select(CardLink.account_id, CardLink.salt)
                                    .where(CardLink.token_hash == tokens.token_hash(token))
                                    ).first()
        found_pair = (found[0], found[1]) if found is not None else None
        return found_pair[0] if tokens.matches(secret, token, found_pair) else None
