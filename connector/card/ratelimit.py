"""How often one client may ask for card pages: windows from the `limits` library (its
memory storage; one process's count), keyed by the client's address.

`limits` rather than flask-limiter: one route needs it, answered in the page's own way
(JSON or HTML, Retry-After), without a second configuration system beside the settings.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

NAMESPACE = "card"


class ClientLimiter:
    def __init__(self, spec: str, *, clock: Callable[[], float] = time.time) -> None:
        self.limits = parse_many(spec)
        self.limiter = FixedWindowRateLimiter(MemoryStorage())
        self.clock = clock

    def hit(self, client: str) -> int | None:
        """Count one request of `client`: None when it may be served, else the whole
        seconds until it may ask again (for Retry-After)."""
        for item in self.limits:
            if not self.limiter.hit(item, NAMESPACE, client):
                reset_at = self.limiter.get_window_stats(item, NAMESPACE, client).reset_time
                return max(1, math.ceil(reset_at - self.clock()))
        return None


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted: int) -> str:
    """The client's address: the connection's peer, or with `trusted` reverse proxies in
    front, the address the outermost of them saw (X-Forwarded-For, counted from the right,
    as werkzeug's ProxyFix does). Entries further left are whatever the client wrote.
    An IPv6 client is counted by its /64: one subscriber holds a whole /64, and would
    otherwise get a fresh allowance with every address in it."""
    address = remote_addr or "unknown"
    if trusted and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if len(hops) >= trusted:
            address = hops[-trusted]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
