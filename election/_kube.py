"""The record store on Kubernetes `coordination.k8s.io/v1` Lease objects.

The one module that imports `kubernetes`. Each record is one Lease in one
namespace; its version token is the Lease's `metadata.resourceVersion`, and every
replace and delete sends that version back, so the API server does the
compare-and-swap (409 Conflict -> `ConflictError`). Updates are JSON Patches that set
the resourceVersion, never PUTs: the Lease API creates on update, so a PUT could
resurrect a Lease deleted meanwhile (found on a real apiserver).

Record data <-> Lease:

- `holderIdentity` (str), `leaseDurationSeconds` (int), `acquireTime` and
  `renewTime` (RFC 3339 strings with a zone; stored as MicroTime and read back as
  `YYYY-MM-DDTHH:MM:SS.ffffffZ`), `leaseTransitions` (int) map onto the Lease spec.
  A `None` value for one of them means "unset" and reads back as absent.
- every other key `k` is JSON-encoded into annotation `mooring.io/k` (so `k` must
  be a valid annotation name: alphanumerics, `-`, `_`, `.`, at most 63 characters).
- the full record name sits in annotation `store.mooring.io/name`, and every Lease
  carries label `app.kubernetes.io/managed-by=mooring`, which `list` selects on.

Lease names (DNS-1123 subdomains) come from `prefix + name`, deterministically:
strip leading and trailing `/`, lowercase, and turn every run of characters other
than `a-z0-9` into one `-` ("/mooring/" + "members/r1" -> "mooring-members-r1").
When that is lossy beyond `/` -> `-` (upper case, `_`, `.`, `//`, ...) or too long,
a 10-hex-digit SHA-256 suffix of the full name keeps names apart. A Lease whose
name annotation disagrees with the record asked for is reported as a conflict,
never returned as that record.

The store owns its Lease objects: an update writes labels, annotations and spec whole, so foreign
labels or annotations on them do not survive our next write.

The official client is synchronous: each call runs in a worker thread with
`_request_timeout`, and the awaiting caller is bounded by the same timeout.
Build the `ApiClient` with `Configuration.retries = False` (as `load_kube_store`
does) so urllib3 never repeats a compare-and-swap behind the caller's back.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.config.incluster_config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from election import _errors as errors
from election import _records as records

__all__ = [
    "ANNOTATION_PREFIX",
    "HTTP_ERRORS",
    "KubeLeaseStore",
    "call",
    "lease_name",
    "load_api_client",
    "load_kube_store",
]

ANNOTATION_PREFIX = "mooring.io/"
NAME_ANNOTATION = "store.mooring.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "mooring"

# What an HTTP status means to a caller; statuses not listed are CoordinationError
# (not retryable: bad request, forbidden, invalid object, ...).
HTTP_ERRORS: Mapping[int, type[errors.CoordinationError]] = {
    0: errors.StoreUnavailableError,  # no HTTP status: the client failed before an answer
    404: errors.ConflictError,  # a write found the object gone (get turns 404 into None)
    408: errors.StoreUnavailableError,
    409: errors.ConflictError,  # AlreadyExists on create, stale resourceVersion on replace
    429: errors.StoreUnavailableError,
    500: errors.StoreUnavailableError,
    502: errors.StoreUnavailableError,
    503: errors.StoreUnavailableError,
    504: errors.StoreUnavailableError,
}

_TIME_FIELDS = {"acquireTime": "acquire_time", "renewTime": "renew_time"}
_STR_FIELDS = {"holderIdentity": "holder_identity"}
_INT_FIELDS = {
    "leaseDurationSeconds": "lease_duration_seconds",
    "leaseTransitions": "lease_transitions",
}
SPEC_FIELDS = frozenset({*_TIME_FIELDS, *_STR_FIELDS, *_INT_FIELDS})

_ANNOTATION_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_NOT_DNS = re.compile(r"[^a-z0-9]+")
_MAX_NAME = 253


class _MicroTime(datetime.datetime):
    """A datetime that serializes as Kubernetes MicroTime (always 6 fraction digits).

    The client serializes datetimes with `isoformat()`, which drops a zero fraction
    ("...:05+00:00"); the API server rejects that for MicroTime fields.
    """

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return records.format_time(self)


def _micro_time(key: str, value: object) -> _MicroTime:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an RFC 3339 string, not {type(value).__name__}")
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"{key} {value!r} is not an RFC 3339 time") from err
    if parsed.tzinfo is None:
        raise ValueError(f"{key} {value!r} has no time zone")
    utc = parsed.astimezone(datetime.UTC)
    return _MicroTime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
        tzinfo=datetime.UTC,
    )  # fmt: skip


def lease_name(full_name: str) -> str:
    """The Lease object name for a full record name (store prefix + name); see module doc."""
    trimmed = full_name.strip("/")
    readable = _NOT_DNS.sub("-", trimmed.lower()).strip("-")
    if readable and readable == trimmed.replace("/", "-") and len(readable) <= _MAX_NAME:
        return readable
    if not full_name:
        raise ValueError("a record name must not be empty")
    digest = hashlib.sha256(full_name.encode()).hexdigest()[:10]
    head = readable[: _MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest


def _spec_and_annotations(
    data: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    spec: dict[str, Any] = {}
    annotations: dict[str, str] = {}
    for key, value in data.items():
        if key in SPEC_FIELDS:
            if value is None:
                continue
            if key in _TIME_FIELDS:
                spec[_TIME_FIELDS[key]] = _micro_time(key, value)
            elif key in _STR_FIELDS:
                if not isinstance(value, str):
                    raise ValueError(f"{key} must be a string, not {type(value).__name__}")
                spec[_STR_FIELDS[key]] = value
            else:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{key} must be an integer, not {type(value).__name__}")
                spec[_INT_FIELDS[key]] = value
            continue
        if not isinstance(key, str) or not _ANNOTATION_NAME.fullmatch(key):
            raise ValueError(f"record field {key!r} is not a valid annotation name")
        try:
            annotations[ANNOTATION_PREFIX + key] = json.dumps(
                value, sort_keys=True, separators=(",", ":")
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"record field {key!r} is not JSON-serializable: {err}") from err
    return spec, annotations


def _data(lease: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    spec = lease.spec
    if spec is not None:
        for key, attr in {**_STR_FIELDS, **_INT_FIELDS}.items():
            value = getattr(spec, attr, None)
            if value is not None:
                data[key] = value
        for key, attr in _TIME_FIELDS.items():
            value = getattr(spec, attr, None)
            if value is not None:
                data[key] = records.format_time(value)
    for key, text in (lease.metadata.annotations or {}).items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        try:
            data[key.removeprefix(ANNOTATION_PREFIX)] = json.loads(text)
        except ValueError as err:
            raise errors.CoordinationError(
                f"Lease {lease.metadata.name}: annotation {key} is not JSON"
            ) from err
    return data


RAISE = object()
"""`call(missing=RAISE)`: a 404 is an error like any other status."""


async def call(
    what: str,
    fn: Callable[..., Any],
    /,
    *args: Any,
    request_timeout: float,
    missing: object = RAISE,
    **kwargs: Any,
) -> Any:
    """Run a blocking call of the official client in a worker thread, bounded by
    `request_timeout` seconds (on the wire and for the awaiting caller); map its errors
    through HTTP_ERRORS. A 404 returns `missing` unless that is RAISE."""
    bound = functools.partial(fn, *args, _request_timeout=request_timeout, **kwargs)
    try:
        async with asyncio.timeout(request_timeout):
            return await asyncio.to_thread(bound)
    except ApiException as err:
        if err.status == 404 and missing is not RAISE:
            return missing
        raise _mapped(err, what) from err
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as err:
        raise _mapped(err, what) from err


def _mapped(err: BaseException, what: str) -> errors.CoordinationError:
    if isinstance(err, ApiException):
        status = int(err.status or 0)
        kind = HTTP_ERRORS.get(status, errors.CoordinationError)
        return kind(f"kubernetes {what}: HTTP {status} {_reason(err)}")
    if isinstance(err, TimeoutError):
        return errors.StoreUnavailableError(f"kubernetes {what}: timed out")
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return errors.StoreUnavailableError(f"kubernetes {what}: {detail}")


def _reason(err: ApiException) -> str:
    """The Status object's message when the server sent one, else the HTTP reason."""
    try:
        status = json.loads(err.body or "")
        return str(status.get("message") or err.reason or "").strip()
    except (ValueError, AttributeError):
        return str(err.reason or "").strip()


class KubeLeaseStore:
    """RecordStore over Lease objects in one namespace; owns (and closes) `api_client`."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        namespace: str,
        prefix: str = "",
        timeout: float = 2.0,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.prefix = prefix
        self.timeout = timeout
        self._api = kubernetes.client.CoordinationV1Api(api_client)

    async def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        none_if_missing: bool = False,
        **kwargs: Any,
    ) -> Any:
        missing = None if none_if_missing else RAISE
        return await call(what, fn, *args, request_timeout=self.timeout, missing=missing, **kwargs)

    def _lease(
        self, full_name: str, data: Mapping[str, Any], *, resource_version: str | None = None
    ) -> Any:
        spec, annotations = _spec_and_annotations(data)
        annotations[NAME_ANNOTATION] = full_name
        return kubernetes.client.V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=kubernetes.client.V1ObjectMeta(
                name=lease_name(full_name),
                namespace=self.namespace,
                labels={MANAGED_BY_LABEL: MANAGED_BY},
                annotations=annotations,
                resource_version=resource_version,
            ),
            spec=kubernetes.client.V1LeaseSpec(**spec),
        )

    def _record(self, lease: Any, *, expect: str | None = None) -> records.Record:
        full_name = (lease.metadata.annotations or {}).get(NAME_ANNOTATION)
        if expect is not None and full_name != expect:
            raise errors.ConflictError(
                f"Lease {lease.metadata.name} holds record {full_name!r}, not {expect!r}"
            )
        return records.Record(
            name=str(full_name).removeprefix(self.prefix),
            data=_data(lease),
            version=str(lease.metadata.resource_version),
        )

    async def get(self, name: str) -> records.Record | None:
        full = self.prefix + name
        lease = await self._call(
            f"get {name!r}",
            self._api.read_namespaced_lease,
            lease_name(full),
            self.namespace,
            none_if_missing=True,
        )
        return None if lease is None else self._record(lease, expect=full)

    async def create(self, name: str, data: Mapping[str, Any]) -> records.Record:
        full = self.prefix + name
        body = self._lease(full, data)
        lease = await self._call(
            f"create {name!r}", self._api.create_namespaced_lease, self.namespace, body
        )
        return self._record(lease, expect=full)

    async def update(self, record: records.Record, data: Mapping[str, Any]) -> records.Record:
        # A JSON Patch, not a replace: Leases allow create-on-update, so a PUT carrying
        # the resourceVersion of a Lease deleted meanwhile would bring it back to life.
        # A patch never creates (404), and the resourceVersion it sets makes the write
        # conditional (409 when it moved). Labels, annotations and spec are written whole.
        full = self.prefix + record.name
        lease = self.api_client.sanitize_for_serialization(  # type: ignore[no-untyped-call]
            self._lease(full, data, resource_version=_version(record))
        )
        patch = [
            {"op": "add", "path": f"/{path}", "value": value}
            for path, value in (
                ("metadata/resourceVersion", lease["metadata"]["resourceVersion"]),
                ("metadata/labels", lease["metadata"]["labels"]),
                ("metadata/annotations", lease["metadata"]["annotations"]),
                ("spec", lease.get("spec", {})),
            )
        ]
        patched = await self._call(
            f"update {record.name!r}",
            self._api.patch_namespaced_lease,
            lease_name(full),
            self.namespace,
            patch,
        )
        return self._record(patched, expect=full)

    async def update_fenced(
        self,
        record: records.Record | None,
        data: Mapping[str, Any],
        *,
        fence: records.Record,
        name: str | None = None,
    ) -> records.Record:
        """Check that `fence` is unchanged, then compare-and-swap `record` (None: create `name`).

        Kubernetes has no multi-object transaction, so this is weaker than etcd's:
        the fence may move between the check and the write. The write itself is
        still a compare-and-swap, so put the fencing token in `data` as well.
        """
        if record is not None and name is not None and name != record.name:
            raise ValueError(f"name {name!r} does not match record {record.name!r}")
        if record is None and name is None:
            raise ValueError("update_fenced needs `name` when creating (record is None)")
        target = record.name if record is not None else str(name)
        if target == fence.name:
            raise ValueError("a record cannot be fenced by itself")
        current = await self.get(fence.name)
        if current is None or current.version != fence.version:
            raise errors.ConflictError(
                f"kubernetes fenced write {target!r}: fence {fence.name!r}@{fence.version} moved"
            )
        if record is None:
            return await self.create(target, data)
        return await self.update(record, data)

    async def delete(self, record: records.Record) -> None:
        full = self.prefix + record.name
        options = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(resource_version=_version(record))
        )
        await self._call(
            f"delete {record.name!r}",
            self._api.delete_namespaced_lease,
            lease_name(full),
            self.namespace,
            body=options,
        )

    async def list(self, prefix: str = "") -> list[records.Record]:
        leases = await self._call(
            "list",
            self._api.list_namespaced_lease,
            self.namespace,
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        )
        wanted = self.prefix + prefix
        found = [
            self._record(lease)
            for lease in leases.items
            if str((lease.metadata.annotations or {}).get(NAME_ANNOTATION, "")).startswith(wanted)
        ]
        return sorted(found, key=lambda record: record.name)

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)


def _version(record: records.Record) -> str:
    # An empty resourceVersion would make the server skip its compare-and-swap.
    if not record.version:
        raise errors.ConflictError(f"record {record.name!r} has no resourceVersion")
    return record.version


def load_kube_store(
    *,
    namespace: str,
    kubeconfig: str | None = None,
    prefix: str = "",
    timeout: float = 2.0,
    env: Mapping[str, str] | None = None,
) -> KubeLeaseStore:
    """A store from `kubeconfig`, else $KUBECONFIG, else in-cluster config, else ~/.kube/config."""
    return KubeLeaseStore(
        load_api_client(kubeconfig=kubeconfig, env=env),
        namespace=namespace,
        prefix=prefix,
        timeout=timeout,
    )


def load_api_client(
    *, kubeconfig: str | None = None, env: Mapping[str, str] | None = None
) -> kubernetes.client.ApiClient:
    """An API client from `kubeconfig`, else $KUBECONFIG, else in-cluster config, else
    ~/.kube/config; without urllib3 retries (a compare-and-swap is never repeated)."""
    env = os.environ if env is None else env
    configuration = kubernetes.client.Configuration()
    try:
        path = kubeconfig or env.get("KUBECONFIG")
        if path:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, client_configuration=configuration, persist_config=False
            )
        elif env.get("KUBERNETES_SERVICE_HOST"):
            incluster = kubernetes.config.incluster_config
            loader = incluster.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=incluster.SERVICE_TOKEN_FILENAME,
                cert_filename=incluster.SERVICE_CERT_FILENAME,
                environ=env,
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
        else:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.path.expanduser("~/.kube/config"),
                client_configuration=configuration,
                persist_config=False,
            )
    except (kubernetes.config.ConfigException, OSError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise errors.CoordinationError(f"no usable Kubernetes configuration: {detail}") from err
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration)
