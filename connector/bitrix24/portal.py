"""Which Bitrix24 portal a domain names: the one spelling every comparison uses.

The connector is bound to one portal (bitrix24.portal). An install or event naming another
domain is refused, and calls go only to that portal, never to an endpoint a request names. A
domain is compared as `host[:port]`, lower case, without scheme, trailing slash or trailing
dot, and without the scheme's default port: `https://ACME.bitrix24.ru:443/` is
`acme.bitrix24.ru`. Anything beyond host and port (a path, a user part, a query) names no
portal, so `acme.bitrix24.ru@evil.example` or `acme.bitrix24.ru/x` never equals the portal.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"https": 443, "http": 80}
NOT_IN_A_DOMAIN = set("/\\@?#%") | {" ", "\t", "\r", "\n"}


def split(text: str) -> tuple[str, str] | None:
    """(scheme, domain) of `[scheme://]host[:port][/]`; None when it is not one."""
    scheme, found, rest = text.strip().partition("://")
    if not found:
        scheme, rest = "https", text.strip()
    scheme = scheme.lower()
    rest = rest[:-1] if rest.endswith("/") else rest
    if scheme not in DEFAULT_PORTS or not rest or NOT_IN_A_DOMAIN & set(rest):
        return None
    try:
        parts = urlsplit(f"//{rest}")
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return scheme, host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"


def domain_of(text: str | None) -> str | None:
    """The comparable `host[:port]` of a domain or portal URL; None when it names none."""
    found = split(text) if text else None
    return found[1] if found else None


def url_domain(url: str | None) -> str | None:
    """The comparable domain of a URL (a webhook URL, a stored client_endpoint)."""
    parts = urlsplit(url or "")
    return domain_of(f"{parts.scheme}://{parts.netloc}") if parts.netloc else None


def same_portal(given: str | None, portal: str) -> bool:
    """Whether `given` (a request's auth[domain]) names the configured portal's domain."""
    # Bitrix24 sends the domain as configured: the exact match spares the parse per event.
    return bool(portal) and (given == portal or domain_of(given) == portal)
