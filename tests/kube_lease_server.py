"""A real HTTP server speaking the `coordination.k8s.io/v1` Lease REST contract.

No Kubernetes API server can run on the test machines, so the Kubernetes adapter is
tested over real HTTP, through the official client, against this server. It keeps
what the adapter relies on:

- GET / POST / PUT / DELETE `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]`,
  LIST per namespace (with equality `labelSelector`) and across namespaces;
- one monotonically increasing resourceVersion for every write (as etcd's revision),
  `uid` and `creationTimestamp` set on create and kept on replace;
- PUT compares `metadata.resourceVersion` (when sent): mismatch -> 409 Conflict;
  PUT of a missing name -> 404; POST of an existing name -> 409 AlreadyExists;
  DELETE honours `preconditions.resourceVersion` / `uid` -> 409 Conflict;
- errors are `Status` objects with the API server's reasons and codes;
- validation the real server does: DNS-1123 names, MicroTime fields with exactly
  six fraction digits, leaseDurationSeconds > 0, leaseTransitions >= 0.

Fault switches: `hang = True` stalls every request until it is cleared (stalled
requests are then dropped unanswered, like packets lost in a partition);
`fail_status = 503` answers every request with that status.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["KubeLeaseServer", "make_api_client"]

_NAMESPACED = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/]+))?/?$"
)
_ALL = re.compile(r"^/apis/coordination\.k8s\.io/v1/leases/?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class _Fail(Exception):
    def __init__(self, code: int, message: str, *, reason: str | None = None, name: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.name = name


def _status(code: int, message: str, *, reason: str, name: str = "") -> dict[str, Any]:
    details: dict[str, Any] = {"group": "coordination.k8s.io", "kind": "leases"}
    if name:
        details["name"] = name
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


def _conflict(name: str, why: str) -> _Fail:
    return _Fail(
        409,
        f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": {why}',
        name=name,
    )


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class KubeLeaseServer:
    """The Lease API on a free loopback port; `with KubeLeaseServer() as server: server.url`."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.fail_status: int | None = None
        self.requests = 0
        self._leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._revision = 1000
        self._lock = threading.Lock()
        self._resume = threading.Event()
        self._resume.set()
        self._connections: set[socket.socket] = set()
        self._httpd = _HTTPServer((host, 0), _Handler, owner=self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hang(self) -> bool:
        return not self._resume.is_set()

    @hang.setter
    def hang(self, value: bool) -> None:
        if value:
            self._resume.clear()
        else:
            self._resume.set()

    def start(self) -> KubeLeaseServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kube-lease-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._resume.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def __enter__(self) -> KubeLeaseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def leases(self, namespace: str) -> dict[str, dict[str, Any]]:
        """A snapshot of the stored objects in one namespace, by name."""
        with self._lock:
            return {
                name: json.loads(json.dumps(obj))
                for (ns, name), obj in self._leases.items()
                if ns == namespace
            }

    # -- the API --------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        match = _NAMESPACED.match(path)
        if match is None:
            if _ALL.match(path) and method == "GET":
                return 200, self._list(None, query)
            raise _Fail(404, f"the server could not find the requested resource ({path})")
        ns, name = match["ns"], match["name"]
        with self._lock:
            if name is None:
                if method == "GET":
                    return 200, self._list(ns, query)
                if method == "POST":
                    return 201, self._create(ns, body)
            else:
                if method == "GET":
                    return 200, self._get(ns, name)
                if method == "PUT":
                    return 200, self._replace(ns, name, body)
                if method == "DELETE":
                    return 200, self._delete(ns, name, body)
        raise _Fail(405, f"{method} is not supported on {path}")

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _get(self, ns: str, name: str) -> dict[str, Any]:
        obj = self._leases.get((ns, name))
        if obj is None:
            raise _Fail(404, f'leases.coordination.k8s.io "{name}" not found', name=name)
        return obj

    def _list(self, ns: str | None, query: dict[str, list[str]]) -> dict[str, Any]:
        selector = (query.get("labelSelector") or [""])[0]
        items = [
            obj
            for (obj_ns, _), obj in sorted(self._leases.items())
            if (ns is None or obj_ns == ns)
            and _matches(obj["metadata"].get("labels") or {}, selector)
        ]
        return {
            "kind": "LeaseList",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": items,
        }

    def _validated(self, ns: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise _Fail(400, "the request body is not a Lease object")
        meta = body["metadata"]
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise _Fail(422, "Lease.coordination.k8s.io is invalid: metadata.name: Required value")
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise _Fail(
                422,
                f'Lease.coordination.k8s.io "{name}" is invalid: metadata.name: Invalid value: '
                f'"{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.'",
                name=name,
            )
        if meta.get("namespace") not in (None, "", ns):
            raise _Fail(
                400,
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        for field in ("annotations", "labels"):
            for key, value in (meta.get(field) or {}).items():
                if not _QUALIFIED.match(key) or not isinstance(value, str):
                    raise _Fail(
                        422, f'Lease "{name}" is invalid: metadata.{field}: Invalid value: "{key}"'
                    )
        spec = body.get("spec") or {}
        for field in ("acquireTime", "renewTime"):
            value = spec.get(field)
            if value is not None and (not isinstance(value, str) or not _MICRO_TIME.match(value)):
                raise _Fail(
                    400,
                    f'parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00": '
                    f"spec.{field} is not a MicroTime",
                )
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and (not isinstance(duration, int) or duration <= 0):
            raise _Fail(
                422,
                f'Lease.coordination.k8s.io "{name}" is invalid: spec.leaseDurationSeconds: '
                f"Invalid value: {duration}: must be greater than 0",
                name=name,
            )
        transitions = spec.get("leaseTransitions")
        if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
            raise _Fail(
                422,
                f'Lease.coordination.k8s.io "{name}" is invalid: spec.leaseTransitions: '
                f"Invalid value: {transitions}: must be greater than or equal to 0",
                name=name,
            )
        holder = spec.get("holderIdentity")
        if holder is not None and not isinstance(holder, str):
            raise _Fail(400, "spec.holderIdentity must be a string")
        return {
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {
                key: meta[key] for key in ("name", "labels", "annotations") if meta.get(key)
            }
            | {"namespace": ns},
            "spec": dict(spec),
        }

    def _create(self, ns: str, body: Any) -> dict[str, Any]:
        obj = self._validated(ns, body)
        name = obj["metadata"]["name"]
        if (ns, name) in self._leases:
            raise _Fail(
                409,
                f'leases.coordination.k8s.io "{name}" already exists',
                reason="AlreadyExists",
                name=name,
            )
        obj["metadata"].update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._bump(),
            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self._leases[(ns, name)] = obj
        return obj

    def _replace(self, ns: str, name: str, body: Any) -> dict[str, Any]:
        obj = self._validated(ns, body)
        if obj["metadata"]["name"] != name:
            raise _Fail(400, "the name of the object does not match the name on the URL", name=name)
        current = self._get(ns, name)
        sent = body["metadata"]
        if sent.get("resourceVersion") not in (None, "") and (
            sent["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise _conflict(
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        if sent.get("uid") not in (None, "", current["metadata"]["uid"]):
            raise _conflict(name, "Precondition failed: UID in precondition does not match")
        obj["metadata"].update(
            uid=current["metadata"]["uid"],
            creationTimestamp=current["metadata"]["creationTimestamp"],
            resourceVersion=self._bump(),
        )
        self._leases[(ns, name)] = obj
        return obj

    def _delete(self, ns: str, name: str, body: Any) -> dict[str, Any]:
        current = self._get(ns, name)
        pre = (body.get("preconditions") if isinstance(body, dict) else None) or {}
        have = current["metadata"]["resourceVersion"]
        if pre.get("resourceVersion") not in (None, "", have):
            raise _conflict(
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: {have}",
            )
        if pre.get("uid") not in (None, "", current["metadata"]["uid"]):
            raise _conflict(name, "Precondition failed: UID in precondition does not match")
        del self._leases[(ns, name)]
        self._bump()
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": "coordination.k8s.io",
                "kind": "leases",
                "uid": current["metadata"]["uid"],
            },
        }


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], *, owner: KubeLeaseServer
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner._lock:
            self.owner._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.owner._lock:
            self.owner._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) and closed its socket is not an error here


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        owner.requests += 1
        if not owner._resume.is_set():
            owner._resume.wait()
            self.close_connection = True  # dropped: the client saw no answer
            return
        try:
            if owner.fail_status is not None:
                raise _Fail(owner.fail_status, "injected failure")
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise _Fail(400, "the request body is not JSON") from None
            url = urlsplit(self.path)
            code, payload = owner.handle(self.command, url.path, parse_qs(url.query), body)
        except _Fail as fail:
            code = fail.code
            payload = _status(fail.code, str(fail), reason=fail.reason, name=fail.name)
        data = json.dumps(payload).encode()
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


def write_kubeconfig(path: Path, url: str, *, namespace: str) -> Path:
    """A kubeconfig whose current context points at the test server `url` in `namespace`."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "{url}"}}
users:
- name: test
  user: {{token: not-a-secret}}
contexts:
- name: test
  context: {{cluster: test, user: test, namespace: {namespace}}}
current-context: test
"""
    )
    return path
