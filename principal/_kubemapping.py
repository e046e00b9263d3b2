"""The Kubernetes hub store's vocabulary: how Mooring's hub maps onto Kubernetes objects.

An agent is a labelled namespace; a `hub.Resource` is an Argo CD Application or
AppProject (`argoproj.io/v1alpha1`) there, exactly as Argo CD defines it, with Mooring's
own bookkeeping in `mooring.io/*` annotations that never travel (`proto.objects.
synced_object` leaves them out); a `hub.Cursor` is a resourceVersion read as an integer.
Errors of the Kubernetes client become `hub.StoreError` here (`call`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from election import errors as cerrors
from election import kubeobjects as kobj
from principal import _hub as hub
from proto import codec, objects

__all__ = [
    "AGENT_CHECKSUM",
    "AGENT_LABEL",
    "AGENT_VERSION",
    "DELIVERED",
    "GROUP",
    "HUB_LABEL",
    "KINDS",
    "MANAGED_BY_LABEL",
    "MODE_LABEL",
    "ORIGIN",
    "RETRIES",
    "STATUS_SPEC_VERSION",
    "UPDATED_AT",
    "VERSION",
    "annotations_of",
    "body",
    "call",
    "cursor",
    "resource",
    "valid_agent",
]

KINDS = kobj.ARGOCD
GROUP, VERSION = KINDS["Application"].group, KINDS["Application"].version
HUB_LABEL = "mooring.io/hub"
AGENT_LABEL = "mooring.io/agent"
MODE_LABEL = "mooring.io/mode"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ORIGIN = "mooring.io/origin"
AGENT_VERSION = "mooring.io/agent-version"
STATUS_SPEC_VERSION = "mooring.io/status-spec-version"
AGENT_CHECKSUM = "mooring.io/agent-checksum"  # of a mirror as its agent sent it
UPDATED_AT = "mooring.io/updated-at"  # when Mooring last wrote the spec (RFC 3339)
DELIVERED = "mooring.io/delivered"  # the agent's last answer: hub.Delivery as JSON
RETRIES = 8  # compare-and-swap attempts before "too much contention"

T = TypeVar("T")


async def call(coro: Awaitable[T]) -> T:
    """Await a Kubernetes client call, its errors as `hub.StoreError`."""
    try:
        return await coro
    except cerrors.CoordinationError as err:
        raise hub.StoreError(str(err)) from err


def valid_agent(name: str) -> str:
    try:
        return objects.validate_agent_name(name)
    except objects.InvalidObjectError as err:
        raise hub.StoreError(str(err)) from err


def cursor(resource_version: str) -> hub.Cursor:
    try:
        return hub.Cursor(int(resource_version))
    except ValueError:
        raise hub.StoreError(
            f"resourceVersion {resource_version[:40]!r} is not an integer: this apiserver's"
            " storage is not supported by the Kubernetes hub store"
        ) from None


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


def resource(agent: str, obj: Mapping[str, Any]) -> hub.Resource:
    """The `hub.Resource` an Argo CD object of agent `agent`'s namespace stands for."""
    notes = annotations_of(obj)
    synced = objects.synced_object(obj)  # without Mooring's own mooring.io/ keys
    origin = "agent" if notes.get(ORIGIN) == "agent" else "principal"
    status = obj.get("status")
    rv = cursor(str(obj["metadata"]["resourceVersion"]))
    version = int(notes.get(AGENT_VERSION, "0")) if origin == "agent" else rv
    checksum = codec.checksum(synced)
    sent = notes.get(AGENT_CHECKSUM)
    return hub.Resource(
        agent=agent,
        kind=str(obj["kind"]),
        name=str(obj["metadata"]["name"]),
        object=synced,
        checksum=checksum,
        version=version,
        status=status if origin == "agent" else None,
        status_checksum=codec.checksum(status) if origin == "agent" else "",
        origin=origin,
        drifted=origin == "agent" and sent is not None and sent != checksum,
        created_at=str(obj["metadata"].get("creationTimestamp") or ""),
        updated_at=notes.get(UPDATED_AT) or str(obj["metadata"].get("creationTimestamp") or ""),
    )


def body(
    namespace: str, kind: str, name: str, synced: Mapping[str, Any], extra: Mapping[str, str]
) -> dict[str, Any]:
    """The Argo CD object to write in `namespace` for `synced`, `extra` annotations added."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    meta.update(synced.get("metadata") or {})
    if extra:
        meta["annotations"] = {**(meta.get("annotations") or {}), **extra}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": meta,
        "spec": synced.get("spec") or {},
    }
