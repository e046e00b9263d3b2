"""What an Argo CD object is to Mooring: valid names, valid manifests, the synced part.

Both ends and the CLI validate through this one module, before anything is stored,
with the rules the Kubernetes API server applies (so an object Mooring accepts on
etcd or SQLite is one the apiserver would accept too, as far as names and metadata
go; the CRD's own schema is the apiserver's to check).

What travels between hub and workload cluster (`synced_object`): `spec`, and of
`metadata` the `labels`, `annotations` and `finalizers` Argo CD relies on
(`resources-finalizer.argocd.argoproj.io` makes a deletion cascade). Never: fields
the server manages (resourceVersion, uid, generation, managedFields,
creationTimestamp, deletionTimestamp, ownerReferences, ...), `status` (it travels
on its own, the other way), kubectl's last-applied annotation, and
`metadata.namespace`: each side places the object in its own namespace (the hub in
the agent's, the workload cluster in Argo CD's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from proto import _errors as errors

__all__ = [
    "API_VERSION",
    "KINDS",
    "MAX_DEPTH",
    "MAX_OBJECT_BYTES",
    "MOORING_PREFIX",
    "SERVER_MANAGED",
    "SYNCED_METADATA",
    "InvalidObjectError",
    "synced_object",
    "validate_agent_name",
    "validate_manifest",
    "validate_name",
]

API_VERSION = "argoproj.io/v1alpha1"
KINDS = ("Application", "AppProject")
SYNCED_METADATA = ("labels", "annotations", "finalizers")
SERVER_MANAGED = (
    "resourceVersion",
    "uid",
    "generation",
    "managedFields",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "selfLink",
)
# Annotations that describe one side's client, not the object: never synced.
LOCAL_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
MOORING_PREFIX = "mooring.io/"  # labels and annotations Mooring keeps on one side only

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
MAX_ANNOTATIONS_BYTES = 256 * 1024  # the apiserver's limit on all annotations together
# The synced part of one object, as canonical JSON: it must fit one wire envelope (1 MiB by
# default, `--max-message-bytes`) with room for its status; etcd's own limit is 1.5 MiB.
MAX_OBJECT_BYTES = 900 * 1024
_SHOWN = 60  # characters of an offending value quoted in an error
MAX_DEPTH = 100
"""Deepest nesting of maps and lists accepted in an object or status from the wire
(Kubernetes objects stay far below; deeper ones are an attack on the decoder's stack)."""


class InvalidObjectError(errors.ProtoError, ValueError):
    """A name or manifest the Kubernetes API would refuse (one readable line)."""


def _shown(value: object) -> str:
    try:
        text = value if isinstance(value, str) else repr(value)
    except (ValueError, RecursionError):  # an int past str()'s 4300 digits, or nested deep
        text = f"<{type(value).__name__} too long to show>"
    text = text.encode("unicode_escape").decode("ascii")
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def validate_name(name: object, *, kind: str = "object") -> str:
    """A DNS-1123 subdomain (at most 253 characters), as Application and AppProject names are."""
    if not isinstance(name, str) or not name:
        raise InvalidObjectError(f"{kind} without metadata.name")
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise InvalidObjectError(
            f"invalid {kind} name {_shown(name)}: a Kubernetes name is at most 253 characters"
            " of lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        )
    return name


def validate_agent_name(name: object) -> str:
    """A DNS-1123 label (at most 63 characters): an agent's name is its hub namespace's."""
    if not isinstance(name, str) or not name:
        raise InvalidObjectError("an agent needs a name")
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise InvalidObjectError(
            f"invalid agent name {_shown(name)}: at most 63 lowercase letters, digits and '-',"
            " starting and ending with a letter or digit (it names the agent's namespace)"
        )
    return name


def _validate_key(key: object, *, where: str) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidObjectError(f"{where}: keys must be non-empty strings, got {_shown(key)}")
    prefix, _, name = key.rpartition("/")
    if (
        len(name) > 63
        or not _QUALIFIED_NAME.fullmatch(name)
        or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)))
        or (not prefix and key.startswith("/"))
    ):
        raise InvalidObjectError(
            f"{where}: invalid key {_shown(key)}: an optional DNS-subdomain prefix and '/', then"
            " at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )


def _validate_metadata(kind: str, name: str, meta: Mapping[str, Any]) -> None:
    where = f"{kind} {name}"
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, Mapping):
            raise InvalidObjectError(f"{where}: metadata.labels must be a map")
        for key, value in labels.items():
            _validate_key(key, where=f"{where}: metadata.labels")
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                raise InvalidObjectError(
                    f"{where}: metadata.labels[{key}]: invalid value {_shown(value)}: at most 63"
                    " letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
                )
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, Mapping):
            raise InvalidObjectError(f"{where}: metadata.annotations must be a map")
        size = 0
        for key, value in annotations.items():
            _validate_key(key, where=f"{where}: metadata.annotations")
            if not isinstance(value, str):
                raise InvalidObjectError(
                    f"{where}: metadata.annotations[{key}] must be a string, got {_shown(value)}"
                )
            size += len(key.encode()) + len(value.encode())
        if size > MAX_ANNOTATIONS_BYTES:
            raise InvalidObjectError(
                f"{where}: metadata.annotations total {size} bytes, more than the"
                f" {MAX_ANNOTATIONS_BYTES} Kubernetes allows"
            )
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list):
            raise InvalidObjectError(f"{where}: metadata.finalizers must be a list of names")
        for finalizer in finalizers:
            _validate_key(finalizer, where=f"{where}: metadata.finalizers")


def validate_manifest(doc: object, *, need_spec: bool = True) -> tuple[str, str]:
    """Check a manifest of an Application or AppProject; returns (kind, name).

    `need_spec=False` for a status report, which names its object and carries no spec.
    """
    if not isinstance(doc, Mapping):
        raise InvalidObjectError(f"a manifest must be a map, got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise InvalidObjectError(
            f"unsupported kind {_shown(kind)}: expected Application or AppProject"
        )
    api_version = doc.get("apiVersion")
    if api_version is not None and api_version != API_VERSION:
        raise InvalidObjectError(
            f"{kind}: unsupported apiVersion {_shown(api_version)}: expected {API_VERSION}"
        )
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise InvalidObjectError(f"{kind} without metadata.name")
    name = validate_name(meta.get("name"), kind=kind)
    _validate_metadata(kind, name, meta)
    spec = doc.get("spec")
    if spec is None and need_spec:
        raise InvalidObjectError(f"{kind} {name} has no spec")
    if spec is not None and not isinstance(spec, Mapping):
        raise InvalidObjectError(f"{kind} {name}: spec must be a map")
    status = doc.get("status")
    if status is not None and not isinstance(status, Mapping):
        raise InvalidObjectError(f"{kind} {name}: status must be a map")
    synced = synced_object(doc)
    # What travels (with the status, as an autonomous agent sends it) must load on the
    # other end: load_json refuses deeper nesting and text that is not valid Unicode.
    _check_tree({**synced, "status": status}, what=f"{kind} {name}")
    try:  # as canonical_json encodes it, but refusing NaN and infinities (not JSON)
        text = json.dumps(
            synced, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        size = len(text.encode())
        json.dumps(status, allow_nan=False)  # the status travels too
    except (TypeError, ValueError) as err:
        raise InvalidObjectError(f"{kind} {name}: not representable as JSON: {err}") from err
    if size > MAX_OBJECT_BYTES:
        raise InvalidObjectError(
            f"{kind} {name} is {size} bytes of JSON, more than the {MAX_OBJECT_BYTES} an object"
            " may have to be synced (it must fit one message to the agent)"
        )
    return str(kind), name


def synced_object(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a manifest that travels and is checksummed: metadata.{labels,
    annotations, finalizers} (each only when non-empty) and spec. Labels and annotations
    under MOORING_PREFIX are Mooring's own bookkeeping on one side and never travel."""
    meta = doc.get("metadata") or {}
    kept: dict[str, Any] = {}
    for key in SYNCED_METADATA:
        value = meta.get(key)
        if key in ("labels", "annotations") and value:
            value = {
                k: v
                for k, v in value.items()
                if not k.startswith(MOORING_PREFIX) and k not in LOCAL_ANNOTATIONS
            }
        if value:
            kept[key] = value
    return {"metadata": kept, "spec": doc.get("spec") or {}}


def load_json(text: str, *, what: str) -> Any:
    """Decode JSON from the wire, or InvalidObjectError naming `what`: not JSON, nested
    deeper than MAX_DEPTH, or holding text that is not valid Unicode (a lone surrogate
    such as "\\ud800" decodes in Python but can never be encoded again)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidObjectError(f"{what} is nested too deeply") from None
    except ValueError as err:
        raise InvalidObjectError(f"{what} is not JSON: {str(err)[:_SHOWN]}") from err
    _check_tree(value, what=what)
    return value


def _check_tree(value: Any, *, what: str) -> None:
    """InvalidObjectError naming `what` when `value` nests deeper than MAX_DEPTH or holds
    text that is not valid Unicode."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidObjectError(f"{what} is nested deeper than {MAX_DEPTH} levels")
            children = list(item.items()) if isinstance(item, dict) else list(enumerate(item))
            for key, child in children:
                if isinstance(key, str):
                    _valid_text(key, what=what)
                stack.append((child, depth + 1))
        elif isinstance(item, str):
            _valid_text(item, what=what)


def _valid_text(text: str, *, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidObjectError(f"{what} holds text that is not valid Unicode") from None
