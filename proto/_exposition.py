"""The metrics port of every process: `/metrics`, `/healthz` and `/readyz`, nothing else;
and the one reader of what a `/metrics` port answers (`scrape`, `Samples`).

`/healthz` answers 200 while the process can answer at all (liveness: it never consults
a store, Redis or a peer). `/readyz` answers 200 or 503 from the `ready` callback, with
its one-line reason as the body. Any other path is 404.

Floods. A connection must send its whole request within REQUEST_TIMEOUT of being
accepted (a deadline for the request, not per read: a client trickling one byte a
second is closed like an idle one). At most MAX_CONNECTIONS may be waiting for their
request at once; a new connection beyond that sheds the oldest waiting one, not
itself, so a real scrape (which sends its request at once) is answered even while
idle connections are opened as fast as they are closed. Threads are capped at twice
MAX_CONNECTIONS; past that new connections are closed at once.

Reading. `scrape(address, timeout=...)` returns the answer's `Samples`, kept per label
set: `value(name, **labels)` is the one series with exactly those labels, `sum(name,
**labels)` adds every series that has them (a labelled counter's total is
`sum(name)`), `series(name)` is all of them. Sample names are as exposed: a counter's
`..._total`, a histogram's `..._count` and `..._sum`.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import math
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping

import prometheus_client as prom
from prometheus_client import parser as prom_parser

__all__ = ["Labels", "MetricsServer", "Readiness", "Samples", "scrape", "serve"]

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, reason); called on the server's thread, so it must only read state."""

REQUEST_TIMEOUT = 3.0
"""Seconds a connection may take to send its whole request."""
MAX_CONNECTIONS = 64
"""Connections waiting for their request at once (one thread each); Prometheus needs one
or two."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.0"

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.request_read(self.connection)  # from here it is no idle connection
        return parsed

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
    request_queue_size = 128  # a burst is accepted (and turned away) rather than retried

    def __init__(
        self, address: tuple[str, int], *, registry: prom.CollectorRegistry, ready: Readiness
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.registry = registry
        self.ready = ready
        self.max_waiting = MAX_CONNECTIONS
        self.request_timeout = REQUEST_TIMEOUT
        self.slots = threading.BoundedSemaphore(2 * MAX_CONNECTIONS)
        # Accepted connections whose request is not read yet -> when accepted (monotonic),
        # oldest first.
        self._waiting: collections.OrderedDict[socket.socket, float] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.turned_away = 0  # closed at once: no thread left
        self.shed = 0  # closed to make room for a newer connection
        self.expired = 0  # closed at the request deadline

    @staticmethod
    def _cut(conn: socket.socket) -> None:
        """End a connection another thread is reading: its read returns at once."""
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone

    def request_read(self, conn: socket.socket) -> None:
        with self._lock:
            self._waiting.pop(conn, None)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._lock:
            if len(self._waiting) >= self.max_waiting:
                oldest, _ = self._waiting.popitem(last=False)
                self.shed += 1
                self._cut(oldest)
            if not self.slots.acquire(blocking=False):
                self.turned_away += 1
                self.shutdown_request(request)
                return
            self._waiting[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.request_read(request)
            self.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.request_read(request)
            self.slots.release()

    def service_actions(self) -> None:
        """Run by serve_forever about every poll interval: close the connections whose
        request is overdue."""
        deadline = time.monotonic() - self.request_timeout
        with self._lock:
            overdue = [conn for conn, at in self._waiting.items() if at <= deadline]
            for conn in overdue:
                del self._waiting[conn]
        for conn in overdue:
            self.expired += 1
            self._cut(conn)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away mid-answer (a scraper's timeout) is no error of ours;
        anything else is one line on stderr, never a traceback in the process's log."""
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            return
        print(f"metrics server: {type(err).__name__}: {err}", file=sys.stderr)


class MetricsServer:
    """A running metrics port; `port` is the bound one, `close()` is idempotent."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="metrics-http",
            daemon=True,
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


# ----------------------------------------------------------------------------- reading
Labels = frozenset[tuple[str, str]]
"""One series' label set, as (name, value) pairs."""


class Samples:
    """The samples of one `/metrics` answer: sample name -> label set -> value."""

    def __init__(self, series: Mapping[str, Mapping[Labels, float]]) -> None:
        self._series = {name: dict(by_labels) for name, by_labels in series.items()}

    @classmethod
    def parse(cls, text: str) -> Samples:
        """The samples of Prometheus text; ValueError if it is not that format."""
        series: dict[str, dict[Labels, float]] = {}
        for family in prom_parser.text_string_to_metric_families(text):
            for sample in family.samples:
                labels = frozenset(sample.labels.items())
                series.setdefault(sample.name, {})[labels] = float(sample.value)
        return cls(series)

    def value(self, name: str, /, **labels: str) -> float | None:
        """The series of `name` with exactly `labels` (none: the unlabelled one); None if
        it is not exported."""
        return self._series.get(name, {}).get(frozenset(labels.items()))

    def sum(self, name: str, /, **labels: str) -> float | None:
        """The sum over the series of `name` whose labels include `labels` (none given:
        every series); None if there is no such series."""
        wanted = frozenset(labels.items())
        matched = [v for got, v in self._series.get(name, {}).items() if wanted <= got]
        return math.fsum(matched) if matched else None

    def series(self, name: str) -> dict[Labels, float]:
        """Every series of `name`: label set -> value (empty if it is not exported)."""
        return dict(self._series.get(name, {}))

    def __repr__(self) -> str:  # what a failed wait prints as the last value seen
        return f"Samples({self._series!r})"


def scrape(address: str, *, timeout: float) -> Samples | None:
    """The samples http://ADDRESS/metrics answers with (ADDRESS is HOST:PORT); None if it
    does not answer in full within `timeout` seconds, or not with Prometheus text."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
        return Samples.parse(text)
    except (OSError, ValueError, http.client.HTTPException):
        return None
