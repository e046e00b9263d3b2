"""The metrics port of every process: `/metrics`, `/healthz` and `/readyz`, nothing else.

`/healthz` answers 200 while the process can answer at all (liveness: it never consults
a store, Redis or a peer). `/readyz` answers 200 or 503 from the `ready` callback, with
its one-line reason as the body. Any other path is 404. Each connection gets a read
timeout, so idle or half-sent requests cannot pin a thread for long.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Callable

import prometheus_client as prom

__all__ = ["MetricsServer", "Readiness", "serve"]

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, reason); called on the server's thread, so it must only read state."""

REQUEST_TIMEOUT = 10.0
"""Seconds a connection may take to send its request."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, prom.generate_latest(self.server.registry), prom.CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            try:
                ready, reason = self.server.ready()
            except Exception as err:  # a readiness bug must not look ready
                ready, reason = False, f"readiness check failed: {err}"
            self._answer(200 if ready else 503, (reason.strip() or "ok").encode() + b"\n")
        else:
            self._answer(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _answer(
        self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds would drown the process's own log


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], *, registry: prom.CollectorRegistry, ready: Readiness
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.registry = registry
        self.ready = ready


class MetricsServer:
    """A running metrics port; `port` is the bound one, `close()` is idempotent."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def serve(
    host: str, port: int, *, registry: prom.CollectorRegistry, ready: Readiness
) -> MetricsServer:
    """Listen on HOST:PORT (port 0: any free one) and serve until `close()`."""
    return MetricsServer(_Server((host, port), registry=registry, ready=ready))
