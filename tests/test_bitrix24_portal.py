"""Portal domains compare as host[:port], lower case, without scheme or default port."""

from __future__ import annotations

import pytest

from connector.bitrix24.portal import domain_of, same_portal, url_domain


@pytest.mark.parametrize(("given", "domain"), [
    ("acme.bitrix24.ru", "acme.bitrix24.ru"),
    (" ACME.Bitrix24.ru ", "acme.bitrix24.ru"),
    ("https://acme.bitrix24.ru/", "acme.bitrix24.ru"),
    ("acme.bitrix24.ru:443", "acme.bitrix24.ru"),
    ("acme.bitrix24.ru.", "acme.bitrix24.ru"),
    ("http://acme.bitrix24.ru:80", "acme.bitrix24.ru"),
    ("http://acme.bitrix24.ru:443", "acme.bitrix24.ru:443"),
    ("acme.bitrix24.ru:8443", "acme.bitrix24.ru:8443"),
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("[::1]:8080", "[::1]:8080"),
])
def test_a_domain_in_any_spelling(given: str, domain: str) -> None:
    assert domain_of(given) == domain


@pytest.mark.parametrize("given", [
    "", "/", "acme.bitrix24.ru/rest/", "evil.example@acme.bitrix24.ru",
    "acme.bitrix24.ru@evil.example", "acme.bitrix24.ru:99999", "acme.bitrix24.ru:x",
    "ftp://acme.bitrix24.ru", "acme.bitrix24.ru?x=1", "acme.bitrix24.ru#x",
    "acme%2ebitrix24.ru", "acme.bitrix24.ru\\@evil.example", "acme .bitrix24.ru",
])
def test_anything_more_than_a_host_and_port_names_no_portal(given: str) -> None:
    assert domain_of(given) is None
    assert not same_portal(given, "acme.bitrix24.ru")


def test_same_portal_and_url_domains() -> None:
    assert same_portal("ACME.bitrix24.ru", "acme.bitrix24.ru")
    assert not same_portal("acme.bitrix24.ru.evil.example", "acme.bitrix24.ru")
    assert not same_portal("acme.bitrix24.ru", "")  # no portal configured: nothing matches
    assert url_domain("https://acme.bitrix24.ru/rest/1/secret/") == "acme.bitrix24.ru"
    assert url_domain("http://127.0.0.1:5000/rest/") == "127.0.0.1:5000"
    assert url_domain("https://evil.example/rest/") == "evil.example"
    assert url_domain("not a url") is None
