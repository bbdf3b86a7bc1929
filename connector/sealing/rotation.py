"""Key rotation: every stored token sealed again with a new key, in one transaction.

From a key file: a new key is written in front of the old ones (so every process can open
both), every token is re-sealed with it, then the file keeps the new key and the one before
it (a token another process sealed a moment before the rotation stays readable; the next
rotation drops it). From LOYALTY_SECRET_KEY the operator brings the new key: NEW,OLD.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from connector.crm.models import SEALED_COLUMNS, Credential
from connector.db import Database
from connector.errors import SealError
from connector.sealing.keys import ENV, NEW_KEY, new_key, write_key_file
from connector.sealing.sealer import Sealer

KEPT = 2  # the key in use and the one before it


@dataclass(frozen=True)
class Rotated:
    rows: int
    values: int


def rotate_key(db: Database, sealer: Sealer) -> Rotated:
    """Seal every stored token with a new first key; SealError (nothing changed in the
    database) when a token does not open with the keys at hand."""
    source = sealer.source
    if source.from_env:
        if len(source.env_keys) < 2:
            raise SealError(f"{ENV} holds one key: put a new key in front of it "
                            f"({ENV}=NEW,OLD; make one: {NEW_KEY}), run this again, then "
                            f"set {ENV}=NEW everywhere")
        return reseal_all(db, sealer)
    assert source.path is not None
    old = sealer.keys
    keys = [new_key().encode("ascii"), *old]
    write_key_file(source.path, keys, replace=True)
    sealer.reload()
    rotated = reseal_all(db, sealer)
    write_key_file(source.path, keys[:KEPT], replace=True)
    sealer.reload()
    return rotated


def reseal_all(db: Database, sealer: Sealer) -> Rotated:
    rows = values = 0
    with db.transaction() as session:
        for row in session.scalars(select(Credential).order_by(Credential.id).with_for_update()):
            rows += 1
            for column in SEALED_COLUMNS:
                stored = getattr(row, column)
                if stored is not None:
                    setattr(row, column, sealer.reseal(stored))
                    values += 1
    return Rotated(rows, values)


def unreadable(db: Database, sealer: Sealer) -> tuple[int, list[str]]:
    """How many credential rows there are, and 'crm portal' of each one holding a token that
    no key at hand opens."""
    rows, found = 0, []
    with db.transaction(write=False) as session:
        for row in session.scalars(select(Credential).order_by(Credential.id)):
            rows += 1
            try:
                for column in SEALED_COLUMNS:
                    sealer.open(getattr(row, column))
            except SealError:
                found.append(f"{row.crm} {row.portal}".strip())
    return rows, found
