"""Small helpers for programs that start a server and talk to it (tests, benchmarks)."""

from __future__ import annotations

import socket
import urllib.request


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str) -> bool:
    """Whether the server at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False
