"""The hub store seam: what a replica needs of its source of truth, and one place to open it.

Sessions, the dispatcher, sharding and the CLI work through `HubStore` only, so a
backend is a module that implements it; `open_hub_store(url)` picks the backend from
the URL. Backends: `etcd://H:P[,H:P]` (`principal/_store.py`, the embedded default
of `mooring up`) and `kubernetes://` (`principal/_kubehub.py`: Argo CD's own
Application and AppProject objects, a namespace per agent). One conformance suite (tests/principal/test_hub_conformance.py)
runs over every backend.

A backend's failures reach callers as `StoreError` (its subclasses say what a caller can
do): each backend maps the errors of the layer under it once, as they leave it.

Positions in a store's change feed are `Cursor`s: ordered, and meaningful only to the
store that issued them (an etcd revision today; callers never do arithmetic on them).
A resource's `version` is what travels to agents: it grows with every change of the
resource's spec, and a delete's version is above the version it deletes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, NewType, Protocol

from principal import _errors as errors

__all__ = [
    "MODES",
    "REFUSED_CONDITION",
    "AgentInUseError",
    "AgentRecord",
    "Change",
    "Cursor",
    "Delivery",
    "HistoryLostError",
    "HubStore",
    "MirrorWrite",
    "Mode",
    "ModeConflictError",
    "Resource",
    "Revocation",
    "StoreError",
    "new_revocation",
    "now_rfc3339",
    "open_hub_store",
    "parse_fingerprint",
    "parse_serial",
    "refusal_conditions",
]

Mode = Literal["managed", "autonomous"]
MirrorWrite = Literal["created", "updated", ""]  # what a mirror write did ("": nothing)
MODES: tuple[Mode, ...] = ("managed", "autonomous")
Cursor = NewType("Cursor", int)
REFUSED_CONDITION = "MooringDeliveryError"  # status.conditions[].type of a refused object
MAX_CONDITION_MESSAGE = 1024  # characters of the agent's reason kept in a condition
MAX_REVOCATION_REASON = 256  # characters of an operator's reason kept in a revocation
_HEX = frozenset("0123456789abcdef")


def now_rfc3339() -> str:
    """This moment as Kubernetes writes times (UTC, seconds)."""
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refusal_conditions(status: Mapping[str, Any] | None, message: str) -> dict[str, Any]:
    """`status` with one REFUSED_CONDITION saying `message` (any older one replaced)."""
    # A stored status may be any JSON (older replicas stored whatever an agent reported):
    # only a map's list of conditions is kept.
    updated = dict(status) if isinstance(status, Mapping) else {}
    conditions = updated.get("conditions")
    kept = [
        c
        for c in (conditions if isinstance(conditions, list) else [])
        if isinstance(c, Mapping) and c.get("type") != REFUSED_CONDITION
    ]
    now = now_rfc3339()
    kept.append(
        {
            "type": REFUSED_CONDITION,
            "message": message[:MAX_CONDITION_MESSAGE],
            "lastTransitionTime": now,
        }
    )
    updated["conditions"] = kept
    return updated


def _hex(text: str) -> str:
    """`text` without separators (`:`, spaces), a `0x` prefix and case."""
    cleaned = text.strip().lower().replace(":", "").replace(" ", "")
    return cleaned.removeprefix("0x")


def parse_serial(text: str) -> str:
    """A certificate serial number as people write it (hex, `0x`-prefixed or with colons
    as openssl prints it) -> lowercase hex without leading zeros; ValueError otherwise."""
    cleaned = _hex(text)
    if not cleaned or not set(cleaned) <= _HEX or len(cleaned) > 40:
        raise ValueError(
            f"bad serial {text[:80]!r}: expected the certificate's serial number in hex"
            " (at most 20 bytes, e.g. `openssl x509 -noout -serial`)"
        )
    return cleaned.lstrip("0") or "0"


def parse_fingerprint(text: str) -> str:
    """A SHA-256 certificate fingerprint (64 hex digits, colons allowed, `sha256:` prefix
    allowed) -> lowercase hex; ValueError otherwise."""
    cleaned = _hex(text.strip().lower().removeprefix("sha256:").removeprefix("sha256="))
    if len(cleaned) != 64 or not set(cleaned) <= _HEX:
        raise ValueError(
            f"bad fingerprint {text[:80]!r}: expected the SHA-256 of the certificate, 64 hex"
            " digits (e.g. `openssl x509 -noout -fingerprint -sha256`)"
        )
    return cleaned


def new_revocation(
    *, serial: str = "", fingerprint: str = "", reason: str = "", agent: str = ""
) -> Revocation:
    """The entry `HubStore.revoke` writes, normalised, stamped now; StoreError on bad input."""
    try:
        serial = parse_serial(serial) if serial else ""
        fingerprint = parse_fingerprint(fingerprint) if fingerprint else ""
    except ValueError as err:
        raise StoreError(str(err)) from err
    if not serial and not fingerprint:
        raise StoreError("a revocation needs the certificate's serial or fingerprint")
    said = " ".join(reason.split())[:MAX_REVOCATION_REASON]
    return Revocation(serial, fingerprint, said, agent, now_rfc3339())


class StoreError(errors.PrincipalError):
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
class Revocation:
    """One entry of the hub's certificate revocation list: a certificate is revoked when
    its serial or its fingerprint is that of an entry (an entry may know only one)."""

    serial: str  # lowercase hex, no leading zeros or separators ("" when unknown)
    fingerprint: str  # SHA-256 of the DER certificate, lowercase hex ("" when unknown)
    reason: str = ""  # the operator's words
    agent: str = ""  # the agent the certificate names, when known (`--cert`)
    revoked_at: str = ""  # RFC 3339 (UTC)

    @property
    def key(self) -> str:
        """The entry's name in the store: `sha256-FINGERPRINT`, else `serial-SERIAL`."""
        return f"sha256-{self.fingerprint}" if self.fingerprint else f"serial-{self.serial}"

    def to_data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_data(cls, data: Any) -> Revocation | None:
        """The record `to_data` wrote, or None when it is not one."""
        if not isinstance(data, Mapping):
            return None
        fields = {f: data.get(f, "") for f in ("serial", "fingerprint", "reason", "agent")}
        fields["revoked_at"] = data.get("revoked_at", "")
        if not all(isinstance(v, str) for v in fields.values()):
            return None
        if not fields["serial"] and not fields["fingerprint"]:
            return None
        return cls(**fields)


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
    created_at: str = ""  # RFC 3339 (UTC): when the resource was first written ("" unknown)
    updated_at: str = ""  # RFC 3339 (UTC): when its current spec was written ("" unknown)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """What an agent last answered about one of its resources: applied it (`ok`) or
    refused it, at `checksum` (compare with the resource's: equal means the agent
    answered about the current spec)."""

    checksum: str
    version: int
    ok: bool
    at: str  # RFC 3339 (UTC): when a replica received the answer

    def to_data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_data(cls, data: Any) -> Delivery | None:
        """The record `to_data` wrote, or None when it is not one."""
        if not isinstance(data, Mapping):
            return None
        checksum, version, ok, at = (data.get(k) for k in ("checksum", "version", "ok", "at"))
        if (
            not isinstance(checksum, str)
            or not isinstance(version, int)
            or not isinstance(ok, bool)
        ):
            return None
        return cls(checksum, version, ok, at if isinstance(at, str) else "")


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
    async def get_agent(self, name: str, *, cached: bool = False) -> AgentRecord | None:
        """The agent's record, None when not registered. `cached`: from what this process
        has seen confirmed (its registrations, the `watch_agents` it runs) when it has,
        so a reconnect storm needs no round trip; a miss still asks the store."""
        ...

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
        are deleted first, and returned. A running agent is refused on its next connect
        (`not_registered`), unless the replicas auto-register agents: then it registers
        again, as on its first."""
        ...

    def watch_agents(self) -> AsyncIterator[frozenset[str]]:
        """The registered agent names now, then again after every change; StoreError
        when the watch breaks (call again to re-list)."""
        ...

    # certificate revocation
    async def revoke(
        self, *, serial: str = "", fingerprint: str = "", reason: str = "", agent: str = ""
    ) -> tuple[Revocation, bool]:
        """Add a certificate to the revocation list, by its serial or fingerprint (both
        when known, normalised as `Revocation` says); idempotent: (the entry already
        there, False) when one of the same key exists. StoreError when both are empty."""
        ...

    async def list_revocations(self) -> list[Revocation]:
        """Every revoked certificate, by key."""
        ...

    def watch_revocations(self) -> AsyncIterator[list[Revocation]]:
        """The revocation list now, then again after every change (at most about a
        second late); StoreError when the watch breaks (call again to re-list)."""
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
    ) -> MirrorWrite:
        """Mirror an autonomous agent's resource: "created" or "updated", or "" (falsy)
        when the mirror is already at this version or newer."""
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

    # what agents acknowledged (`mooring app list`'s DELIVERED)
    async def put_deliveries(
        self, agent: str, deliveries: Mapping[tuple[str, str], Delivery | None]
    ) -> None:
        """Record each (kind, name)'s latest answer from the agent; None forgets one (its
        deletion was acknowledged). Answers about resources that are gone are dropped."""
        ...

    async def list_deliveries(self, agent: str) -> dict[tuple[str, str], Delivery]: ...

    # the change feed of resources (status reports are not in it)
    async def cursor(self) -> Cursor:
        """The feed's position now."""
        ...

    def watch_resources(self, *, after: Cursor) -> AsyncIterator[Change]:
        """Every resource change after `after`, in order; HistoryLostError when the feed
        no longer reaches back that far, StoreError when the watch breaks."""
        ...


def open_hub_store(
    url: str,
    *,
    root: str = "/mooring/",
    timeout: float = 2.0,
    env: Mapping[str, str] | None = None,
) -> HubStore:
    """The hub store a URL names (not yet connected): `etcd://H:P[,H:P]` (`etcds://` for
    TLS, and a user: election/_etcdurl.py, its password from a file or
    $MOORING_ETCD_PASSWORD in `env`, default the process environment), or
    `kubernetes://[?kubeconfig=PATH][&hub=NAME][&namespace-prefix=PREFIX][&namespace=NS]`
    (principal/_kubehub.py; `root` does not apply there). ValueError when it is malformed
    or names a file that cannot be read."""
    if url.startswith("kubernetes://"):
        from principal import _kubehub as kube_hub

        return kube_hub.from_url(url, timeout=timeout)
    if url.startswith(("etcd://", "etcds://")):
        import os

        from election import etcd
        from principal import _store as etcd_hub

        kv = etcd.EtcdKV.open(url, timeout=timeout, env=os.environ if env is None else env)
        return etcd_hub.EtcdHubStore(kv, root=root)
    from election import etcdurl

    shown = etcdurl.redacted(url)
    shown = shown if len(shown) <= 80 else shown[:80] + "..."
    raise ValueError(
        f"bad hub store URL {shown!r}: expected etcd[s]://HOST:PORT[,HOST:PORT] or kubernetes://"
    )
