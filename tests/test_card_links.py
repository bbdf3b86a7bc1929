"""Card page links: derived from the secret and a per-account salt, found by the token's
hash, dead after a rotation or a change of secret, written to the CRM by write-back."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connector.card import tokens
from connector.card.models import CardLink
from connector.config import Settings
from connector.errors import AccountNotFoundError, ConfigError
from connector.ledger.models import Account
from connector.ledger.views import AccountRef
from connector.services import Services
from tests.conftest import fresh_services, make_settings

pytestmark = pytest.mark.storage

SECRET = "card-secret-0123456789abcdefghijklmnop"
ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "7")
BORIS = AccountRef("bitrix24", "acme.bitrix24.ru", "8")
OTHER_PORTAL = AccountRef("amocrm", "acme.amocrm.ru", "7")


def card_settings(tmp_path: Path, database_url: str, **card: Any) -> Settings:
    return make_settings(tmp_path, database_url,
                         server={"public_url": "https://loyalty.example.com/"},
                         card={"secret": SECRET, **card})


@pytest.fixture
def services(tmp_path: Path, database_url: str) -> Iterator[Services]:
    services = fresh_services(card_settings(tmp_path, database_url))
    for ref in (ANNA, BORIS, OTHER_PORTAL):
        services.ledger.accrue(ref, D("1000"), key=f"buy:{ref}")
    yield services
    services.close()


def token_of(url: str) -> str:
    prefix = "https://loyalty.example.com/card/"
    assert url.startswith(prefix), url
    return url.removeprefix(prefix)


def version(services: Services, ref: AccountRef) -> int:
    with services.db.transaction(write=False) as session:
        return session.scalar(select(Account.version).where(
            Account.contact_id == ref.contact_id, Account.crm == ref.crm))


# -- tokens, pure ------------------------------------------------------------------------
def test_a_token_depends_on_secret_account_and_salt() -> None:
    token = tokens.derive(SECRET, 1, "a" * 32)
    assert tokens.well_formed(token) and len(token) == 32
    assert token == tokens.derive(SECRET, 1, "a" * 32)
    others = {tokens.derive(SECRET + "x", 1, "a" * 32), tokens.derive(SECRET, 2, "a" * 32),
              tokens.derive(SECRET, 1, "b" * 32)}
    assert token not in others and len(others) == 3


def test_known_and_unknown_tokens_take_the_same_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    salt = tokens.new_salt()
    token = tokens.derive(SECRET, 5, salt)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert tokens.matches(SECRET, token, (5, salt))
    assert not tokens.matches(SECRET, token, None)
    assert not tokens.matches(SECRET, token, (6, salt))
    assert len(calls) == 3 and all(b == token.encode() for _, b in calls)
    # The comparison decides: were it to say "equal" for a found link, the token would pass.
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: True)
    assert tokens.matches(SECRET, "x" * 32, (6, salt))
    assert not tokens.matches(SECRET, "x" * 32, None)  # but nothing found is never a match


# -- links in the database -----------------------------------------------------------------
def test_a_link_is_issued_once_and_finds_its_account(services: Services) -> None:
    before = version(services, ANNA)
    link = services.cards.link(ANNA)
    assert link.rotations == 0
    assert services.cards.link(ANNA) == link  # the same URL every time
    assert version(services, ANNA) == before + 1  # write-back will send it
    assert services.cards.find(token_of(link.url)) == link.account_id
    with services.db.transaction(write=False) as session:
        row = session.get(CardLink, link.account_id)
        # The database holds no working link: only the salt and the token's hash.
        assert row is not None and token_of(link.url) not in (row.salt, row.token_hash)
        assert row.token_hash == tokens.token_hash(token_of(link.url))


def test_rotation_kills_the_old_link(services: Services) -> None:
    old = services.cards.link(ANNA)
    before = version(services, ANNA)
    new = services.cards.rotate(ANNA)
    assert new.url != old.url and new.rotations == 1
    assert services.cards.find(token_of(old.url)) is None
    assert services.cards.find(token_of(new.url)) == new.account_id
    assert services.cards.link(ANNA) == new
    assert version(services, ANNA) == before + 1


@pytest.mark.parametrize("token", ["", "short", "x" * 32, "x" * 33, "../../etc/passwd" * 2,
                                   "é" * 32, "A" * 10_000])
def test_unknown_or_malformed_tokens_find_nothing(services: Services, token: str) -> None:
    services.cards.link(ANNA)
    assert services.cards.find(token) is None


def test_links_of_unknown_accounts_are_refused(services: Services) -> None:
    with pytest.raises(AccountNotFoundError):
        services.cards.link(AccountRef("bitrix24", "acme.bitrix24.ru", "404"))
    with pytest.raises(AccountNotFoundError):
        services.cards.rotate(AccountRef("bitrix24", "acme.bitrix24.ru", "404"))


def test_a_new_secret_kills_every_link_and_publish_issues_new_ones(
        services: Services, tmp_path: Path, database_url: str) -> None:
    old = services.cards.link(ANNA)
    other = fresh_services_keeping(card_settings(tmp_path, database_url,
                                                 secret=SECRET[::-1]))
    try:
        assert other.cards.find(token_of(old.url)) is None
        assert other.cards.publish("bitrix24", "acme.bitrix24.ru") == 2  # Anna and Boris
        assert other.cards.publish("bitrix24", "acme.bitrix24.ru") == 0
        new = other.cards.link(ANNA)
        assert new.url != old.url and other.cards.find(token_of(new.url)) == new.account_id
        assert other.cards.urls([new.account_id]) == {new.account_id: new.url}
    finally:
        other.close()


def fresh_services_keeping(settings: Settings) -> Services:
    """Services on the same, already migrated database (nothing truncated)."""
    return Services.build(settings)


def test_write_back_urls_issue_missing_links_without_a_version_bump(
        services: Services) -> None:
    ids = [services.ledger.account_id(ref) for ref in (ANNA, BORIS)]
    before = [version(services, ref) for ref in (ANNA, BORIS)]
    urls = services.cards.urls(ids)
    assert set(urls) == set(ids) and len(set(urls.values())) == 2
    assert [version(services, ref) for ref in (ANNA, BORIS)] == before
    assert services.cards.urls(ids) == urls
    assert services.cards.link(ANNA).url == urls[ids[0]]


def test_a_link_another_worker_issued_first_is_read_not_replaced(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    first = services.cards.link(ANNA)
    real = services.cards._rows
    missed: list[bool] = []

    def read_before_the_other_commit(session: Any, ids: list[int]) -> dict[int, CardLink]:
        if not missed:  # the first read misses the row the other worker was inserting
            missed.append(True)
            return {}
        return real(session, ids)

    monkeypatch.setattr(services.cards, "_rows", read_before_the_other_commit)
    assert services.cards.urls([first.account_id]) == {first.account_id: first.url}
    assert missed and services.cards.find(token_of(first.url)) == first.account_id


def test_everything_is_off_without_a_secret(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url))
    try:
        services.ledger.accrue(ANNA, D("10"), key="k")
        assert not services.cards.enabled
        assert services.cards.urls([1]) == {}
        for action in (lambda: services.cards.link(ANNA), lambda: services.cards.rotate(ANNA),
                       lambda: services.cards.find("x" * 32),
                       lambda: services.cards.publish("bitrix24", "acme.bitrix24.ru")):
            with pytest.raises(ConfigError, match=r"card\.secret"):
                action()
    finally:
        services.close()


@pytest.mark.parametrize(("card", "problem"), [
    ({"secret": "short"}, "card.secret: use at least 32 characters"),
    ({"rate_limit": "lots"}, "card.rate_limit: 'lots' is not like"),
    ({"trusted_proxies": -1}, "card.trusted_proxies"),
])
def test_card_settings_are_checked(tmp_path: Path, card: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(tmp_path, card=card)
    assert any(line.startswith(problem) for line in raised.value.problems), \
        raised.value.problems
    assert "short" not in str(raised.value)  # the secret is never echoed
