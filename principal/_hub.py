"""The hub store seam: what a replica needs of its source of truth, and one place to open it.

Sessions, the dispatcher, sharding and the CLI work through `HubStore` only, so a
backend is a module that implements it; `open_hub_store(url)` picks the backend from
the URL. Backends: `etcd://H:P[,H:P]` (`principal/_store.py`, the embedded default
of `mooring up`) and `kubernetes://` (`principal/_kubehub.py`: Argo CD's own
Application and AppProject objects, a namespace per agent). One conformance suite (tests/principal/test_hub_conformance.py)
runs over every backend.

Positions in a store's change feed are `Cursor`s: ordered, and meaningful only to the
store that issued them (an etcd revision today; callers never do arithmetic on them).
A resource's `version` is what travels to agents: it grows with every change of the
resource's spec, and a delete's version is above the version it deletes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, NewType, Protocol

__all__ = [
    "MODES",
    "REFUSED_CONDITION",
    "AgentInUseError",
    "AgentRecord",
    "Change",
    "Cursor",
    "HistoryLostError",
    "HubStore",
    "Mode",
    "ModeConflictError",
    "Resource",
    "StoreError",
    "open_hub_store",
    "refusal_conditions",
]

Mode = Literal["managed", "autonomous"]
MODES: tuple[Mode, ...] = ("managed", "autonomous")
Cursor = NewType("Cursor", int)
REFUSED_CONDITION = "MooringDeliveryError"  # status.conditions[].type of a refused object
MAX_CONDITION_MESSAGE = 1024  # characters of the agent's reason kept in a condition


def refusal_conditions(status: Mapping[str, Any] | None, message: str) -> dict[str, Any]:
    """`status` with one REFUSED_CONDITION saying `message` (any older one replaced)."""
    import datetime

    updated = dict(status or {})
    kept = [
        c
        for c in updated.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") != REFUSED_CONDITION
    ]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kept.append(
        {
            "type": REFUSED_CONDITION,
            "message": message[:MAX_CONDITION_MESSAGE],
            "lastTransitionTime": now,
        }
    )
    updated["conditions"] = kept
    return updated


class StoreError(Exception):
    """A hub-store operation could not be done (one readable line)."""


class ModeConflictError(StoreError):
    """The operation does not fit the agent's registered mode."""


class AgentInUseError(StoreError):
    """The agent still has resources on the hub: delete them, or delete it with cascade."""


class HistoryLostError(StoreError):
    """The change feed no longer holds changes after the cursor asked for (etcd compacted
    it, or a watch expired): re-read what you need, then watch after `resume`, the
    oldest cursor the feed still reaches back to (it may deliver again what you re-read)."""

    def __init__(self, message: str, *, resume: Cursor) -> None:
        super().__init__(message)
        self.resume = resume


@dataclasses.dataclass(frozen=True, slots=True)
class AgentRecord:
    name: str
    mode: Mode


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    agent: str
    kind: str  # "Application" | "AppProject"
    name: str
    object: Mapping[str, Any]  # proto.objects.synced_object: {"metadata": {...}, "spec": {...}}
    checksum: str
    version: int
    status: Mapping[str, Any] | None = None
    status_checksum: str = ""
    origin: str = "principal"  # "principal" (managed) | "agent" (an autonomous mirror)
    drifted: bool = False  # a mirror changed behind Mooring's back (no longer the agent's)


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One change of a resource, as the feed delivers it."""

    agent: str
    kind: str
    name: str
    deleted: bool
    resource: Resource | None  # None when deleted
    version: int  # for the wire: the resource's version, or the delete's
    position: Cursor  # this change's own place in the feed (compare with a snapshot's cursor)
    cursor: Cursor  # where to resume: every change at or before it has been delivered
    # An autonomous agent's mirror changed or deleted by someone other than this store
    # (kubectl, etcdctl): the agent's session asks the agent for its objects again.
    drifted: bool = False


class HubStore(Protocol):
    """The principal's source of truth: the agent registry, desired state, mirrors, status."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    # registry
    async def get_agent(self, name: str) -> AgentRecord | None: ...

    async def list_agents(self) -> list[AgentRecord]: ...

    async def register_agent(self, name: str, *, mode: Mode) -> AgentRecord:
        """Idempotent; ModeConflictError when known with another mode."""
        ...

    async def set_agent_mode(self, name: str, *, mode: Mode) -> AgentRecord | None:
        """Change a registered agent's mode (idempotent); None when it is not registered.

        Its resources stay as they are, and a session already open keeps the mode it
        was welcomed with: the agent's next hello with the old mode is refused."""
        ...

    async def delete_agent(self, name: str, *, cascade: bool = False) -> list[Resource] | None:
        """Unregister `name`; None when it was not registered. While it has resources on
        the hub, AgentInUseError, unless `cascade`: then they (and their reported status)
        are deleted first, and returned. A running agent registers again on its next
        connect, as on its first."""
        ...

    def watch_agents(self) -> AsyncIterator[frozenset[str]]:
        """The registered agent names now, then again after every change; StoreError
        when the watch breaks (call again to re-list)."""
        ...

    # desired state and mirrors
    async def list_resources(self, agent: str) -> tuple[list[Resource], Cursor]:
        """The agent's resources and the cursor they were read at."""
        ...

    async def get_resource(self, agent: str, kind: str, name: str) -> Resource | None: ...

    async def apply_desired(self, agent: str, doc: Mapping[str, Any]) -> tuple[Resource, bool]:
        """Write a managed agent's resource from a manifest; (resource, changed)."""
        ...

    async def delete_desired(self, agent: str, kind: str, name: str) -> bool: ...

    async def mirror_upsert(
        self,
        agent: str,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        status: Mapping[str, Any] | None,
    ) -> bool:
        """Mirror an autonomous agent's resource; False when already at this version or newer."""
        ...

    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool: ...

    # status reported by managed agents
    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool: ...

    async def list_status(self, agent: str) -> dict[tuple[str, str], dict[str, Any]]: ...

    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        """Note in the object's status that its agent refused it: a status condition of type
        REFUSED_CONDITION (Applications; replaced by the next status the agent reports)."""
        ...

    # the change feed of resources (status reports are not in it)
    async def cursor(self) -> Cursor:
        """The feed's position now."""
        ...

    def watch_resources(self, *, after: Cursor) -> AsyncIterator[Change]:
        """Every resource change after `after`, in order; HistoryLostError when the feed
        no longer reaches back that far, StoreError when the watch breaks."""
        ...


def open_hub_store(url: str, *, root: str = "/mooring/", timeout: float = 2.0) -> HubStore:
    """The hub store a URL names (not yet connected): `etcd://H:P[,H:P]`, or
    `kubernetes://[?kubeconfig=PATH][&hub=NAME][&namespace-prefix=PREFIX]`
    (principal/_kubehub.py; `root` does not apply there)."""
    if url.startswith("kubernetes://"):
        from principal import _kubehub as kube_hub

        return kube_hub.from_url(url, timeout=timeout)
    if url.startswith("etcd://"):
        from election import _etcd as etcd
        from principal import _store as etcd_hub

        return etcd_hub.EtcdHubStore(
            etcd.EtcdKV(etcd.parse_endpoints(url), timeout=timeout), root=root
        )
    shown = url if len(url) <= 80 else url[:80] + "..."
    raise ValueError(
        f"bad hub store URL {shown!r}: expected etcd://HOST:PORT[,HOST:PORT] or kubernetes://"
    )
