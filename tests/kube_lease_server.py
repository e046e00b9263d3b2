"""An HTTP server that answers the Lease API with error statuses a test chooses.

Every Kubernetes test runs on the test bed's real kube-apiserver (tests/conftest.py,
`kube_apiserver`). This server exists only for what a real apiserver will not do on
demand: answer 429, 500, 502, 503 or 504 (or any status) to a request, so the Lease
adapter's status table (`election._kube.HTTP_ERRORS`) is tested over real HTTP through
the official client. Used by tests/election/test_kube_store.py only.

With `fail_status` unset it answers GET of one Lease with 404 NotFound and a LIST with
an empty LeaseList, as an apiserver with no Leases would; with `fail_status = N` it
answers every request with a `Status` object of code N and the apiserver's reason.
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

__all__ = ["KubeLeaseServer", "make_api_client"]

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _status(code: int, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }


class KubeLeaseServer:
    """The fault server on a free loopback port; a context manager."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.fail_status: int | None = None
        self._httpd = http.server.ThreadingHTTPServer((host, 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeLeaseServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="kube-fault-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> KubeLeaseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        if self.fail_status is not None:
            return self.fail_status, _status(self.fail_status, f"injected HTTP {self.fail_status}")
        if path.split("?")[0].rstrip("/").endswith("/leases"):
            return 200, {
                "kind": "LeaseList",
                "apiVersion": "coordination.k8s.io/v1",
                "metadata": {"resourceVersion": "1"},
                "items": [],
            }
        return 404, _status(404, "leases.coordination.k8s.io not found")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        owner: KubeLeaseServer = self.server.owner  # type: ignore[attr-defined]
        code, body = owner.answer(self.path)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


def make_api_client(url: str) -> Any:
    """A real `kubernetes.client.ApiClient` for `url`, without urllib3 retries."""
    import kubernetes.client

    configuration = kubernetes.client.Configuration(host=url)
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration)
