"""The Alembic migrations produce exactly the schema the models describe."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from connector.config import Settings
from connector.crm.models import Credential
from connector.db import Database
from connector.schema import Base
from connector.sealing import Sealer, key_source


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert db.current_revision() == db.head_revision()
    db.check()


def test_upgrade_is_idempotent(db: Database) -> None:
    db.upgrade()
    assert db.current_revision() == db.head_revision()


def credential_rows(db: Database) -> list[tuple[str, str | None, str | None, str | None]]:
    with db.transaction(write=False) as session:
        return [(row.crm, row.access_token, row.refresh_token, row.application_token)
                for row in session.scalars(select(Credential).order_by(Credential.id))]


def test_tokens_stored_in_clear_are_sealed_by_0010_and_opened_by_its_downgrade(
        db: Database, settings: Settings) -> None:
    sealer = Sealer(key_source(settings))
    db.downgrade("0005", sealer=sealer)
    long_token = "a" * 200  # sealed, longer than the old String(255) column
    with db.transaction() as session:  # as the code before 0010 wrote them: in clear
        session.add_all([
            Credential(crm="bitrix24", portal="b24.example", access_token="at-1",
                       refresh_token="rt-1", application_token=long_token, status="active",
                       updated_at=datetime.now(UTC)),
            Credential(crm="amocrm", portal="amo.example", access_token="at-2",
                       refresh_token=None, application_token=None, status="revoked",
                       updated_at=datetime.now(UTC))])
    clear = credential_rows(db)
    with pytest.raises(RuntimeError, match="crm_credentials holds tokens"):
        db.upgrade()  # without the key nothing changes
    assert db.current_revision() == "0005" and credential_rows(db) == clear

    db.upgrade(sealer=sealer)
    assert db.current_revision() == db.head_revision()
    sealed = credential_rows(db)
    for before, after in zip(clear, sealed, strict=True):
        assert after[0] == before[0]
        for token, stored in zip(before[1:], after[1:], strict=True):
            assert stored == token is None or (stored != token
                                               and sealer.open(stored) == token)
    assert len(sealed[0][3] or "") > 255
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []

    db.downgrade("0005", sealer=sealer)
    assert credential_rows(db) == clear
    db.upgrade(sealer=sealer)
