"""How a record is written on a Kubernetes Lease: its data as spec fields and
annotations, its full name in an annotation, and the Lease's own name. Pure functions
over plain values: the Lease store (`election._kube`) builds the objects.

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
a 10-hex-digit SHA-256 suffix of the full name keeps names apart.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from election import _errors as errors
from election import _records as records

__all__ = [
    "ANNOTATION_PREFIX",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "NAME_ANNOTATION",
    "SPEC_FIELDS",
    "decode",
    "encode",
    "lease_name",
]

ANNOTATION_PREFIX = "mooring.io/"
NAME_ANNOTATION = "store.mooring.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "mooring"

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


def encode(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Record data as (V1LeaseSpec keyword arguments, annotations); ValueError when a
    field has the wrong type or a name no annotation can carry."""
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


def decode(lease: Any) -> dict[str, Any]:
    """The record data a Lease (the client's V1Lease) carries; CoordinationError when an
    annotation of ours is not JSON."""
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
