"""A free local TCP port, for the demo's server and the tests and benchmarks that start one."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (bound and released at once): another process may take
    it before the caller binds it, which on a test machine practically never happens."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
