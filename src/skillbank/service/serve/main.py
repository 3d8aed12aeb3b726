"""Run a server: build the ``Server``, bind the socket, serve with uvicorn until stopped."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from skillbank.service.serve.auth import KeyRing
from skillbank.service.serve.config import ServeConfig


def _web_server(config: Any) -> Any:
    import uvicorn

    class Web(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its shutdown (the process would die before it
        saves); here a signal only asks the server to exit, and ``serve`` saves after."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            sigs = (signal.SIGINT, signal.SIGTERM)
            old = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, handler in old.items():
                    signal.signal(s, handler)

    return Web(config)


def serve(cfg: ServeConfig, keys: list[str]) -> None:
    """Serve until SIGINT/SIGTERM; then save every resident tenant and return."""
    import uvicorn

    from skillbank.service.serve.app import build_app
    from skillbank.service.serve.ops import Server

    server = Server(cfg)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    port = sock.getsockname()[1]
    server.start()
    app = build_app(server, KeyRing(keys))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    print(
        f"skillbank serve: {len(server.tenants.known)} tenants known, "
        f"{cfg.max_tenants} slots, base {server.base_name}; "
        f"listening on http://{cfg.host}:{port}",
        flush=True,
    )
    try:
        _web_server(config).run(sockets=[sock])
    finally:
        server.close()
        st = server.worker.stats
        print(
            f"skillbank serve: stopped, resident tenants saved; {st['passes']} passes ran "
            f"{st['fused_ops']} forward/forward_backward calls (at most {st['largest']} in one)",
            file=sys.stderr,
            flush=True,
        )
