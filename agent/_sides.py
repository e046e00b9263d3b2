"""The agent's two ways to sync, one class each; `SIDES` is the only place the mode is read.

Managed: the hub owns the spec. The hello carries the agent's inventory, the hub sends
what differs; the agent applies each event to its cluster and reports statuses.
Autonomous: the agent owns everything. The hub sends its mirror's inventory in a
ResyncRequest; the agent answers with what differs and then pushes each local change.
"""

from __future__ import annotations

from typing import Any, Protocol

from agent import _localstore as localstore
from agent import _store as store_
from proto import codec, inventory, logfields, objects, pb

__all__ = ["SIDES", "AutonomousSide", "Link", "ManagedSide", "Side", "principal_object"]


class Link(Protocol):
    """The session a side works in (agent._live.Live)."""

    @property
    def store(self) -> localstore.LocalStore: ...
    @property
    def resyncing(self) -> bool: ...
    @property
    def pending(self) -> dict[int, tuple[str, str, str, int | str, str]]: ...
    @property
    def inflight(self) -> dict[tuple[str, str], int | str]: ...
    @property
    def metrics(self) -> Any: ...

    def send(self, envelope: pb.Envelope) -> int: ...

    def sent(self, kind: str, name: str, version: int, operation: str) -> None: ...


class Side(Protocol):
    async def apply(self, event: pb.ResourceEvent, kind: str) -> tuple[bool, str]:
        """Take a resource event from the hub: (changed anything, refusal or "")."""
        ...

    def push(self, row: store_.LocalResource) -> None:
        """Send what the hub lacks of one unsynced local row (unless already in flight)."""
        ...

    async def answer_resync(self, request: pb.ResyncRequest) -> bool:
        """Answer the hub's inventory; False when this side takes no such request."""
        ...


def principal_object(kind: str, name: str, text: str) -> dict[str, Any]:
    """The object of a principal's upsert event, as valid a manifest as the principal
    accepts from an autonomous agent (a local store takes nothing else), else
    InvalidObjectError."""
    doc = objects.load_json(text, what=f"{kind} {name}")
    if not isinstance(doc, dict):
        raise objects.InvalidObjectError(f"{kind} {name}: object is not a JSON object")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise objects.InvalidObjectError(f"{kind} {name}: metadata must be a map")
    objects.validate_manifest({**doc, "kind": kind, "metadata": {**meta, "name": name}})
    return doc


def _key(row: store_.LocalResource) -> pb.ResourceKey:
    return pb.ResourceKey(kind=codec.kind_from_name(row.kind), name=row.name)


class ManagedSide:
    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = link

    @staticmethod
    async def inventory(store: localstore.LocalStore) -> list[pb.InventoryItem]:
        """What the hello carries: every object the agent holds, for the hub to compare."""
        return [
            pb.InventoryItem(
                key=_key(row),
                version=row.version,
                checksum=row.checksum,
                status_checksum=row.status_checksum,
            )
            for row in await store.rows()
        ]

    async def apply(self, event: pb.ResourceEvent, kind: str) -> tuple[bool, str]:
        link = self._link
        name = event.key.name
        try:
            if event.operation == pb.OPERATION_DELETE:
                changed = await link.store.apply_remote_delete(
                    kind, name, version=event.version, force=link.resyncing
                )
            else:
                changed = await link.store.apply_remote_upsert(
                    kind,
                    name,
                    obj=principal_object(kind, name, event.object_json),
                    version=event.version,
                    checksum=event.checksum,
                    force=link.resyncing,
                )
        except objects.InvalidObjectError as err:
            return False, str(err)
        except store_.LocalStoreError as err:
            # Refused by the local store (the workload apiserver's schema or RBAC, an
            # object Mooring did not create): acknowledged as an error, counted, logged
            # once; the principal sends it again only when it changes or on a resync.
            link.metrics.apply_errors.inc()
            return False, str(err)
        return changed, ""

    def push(self, row: store_.LocalResource) -> None:
        """A managed agent reports its objects' statuses."""
        link, key = self._link, (row.kind, row.name)
        if link.inflight.get(key) == row.status_checksum:
            return
        seq = link.send(
            pb.Envelope(
                status=pb.StatusUpdate(
                    key=_key(row),
                    version=row.version,
                    status_json=codec.canonical_json(row.status),
                    status_checksum=row.status_checksum,
                )
            )
        )
        link.pending[seq] = ("status", row.kind, row.name, row.status_checksum, "")
        link.inflight[key] = row.status_checksum

    async def answer_resync(self, request: pb.ResyncRequest) -> bool:
        return False  # the hub compares a managed agent's inventory itself, from the hello


class AutonomousSide:
    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = link

    @staticmethod
    async def inventory(store: localstore.LocalStore) -> list[pb.InventoryItem]:
        return []  # the hub sends its mirror's inventory instead (ResyncRequest)

    async def apply(self, event: pb.ResourceEvent, kind: str) -> tuple[bool, str]:
        return False, "autonomous agents do not take desired state from the principal"

    def push(self, row: store_.LocalResource) -> None:
        """An autonomous agent sends each changed object (or its deletion) whole."""
        if self._link.inflight.get((row.kind, row.name)) == row.version:
            return
        self._send_row(row)

    def _send_row(self, row: store_.LocalResource) -> None:
        link = self._link
        if row.deleted:
            event = pb.ResourceEvent(
                key=_key(row), operation=pb.OPERATION_DELETE, version=row.version
            )
        else:
            doc: dict[str, Any] = dict(row.object)
            if row.status is not None:
                doc["status"] = row.status
            event = pb.ResourceEvent(
                key=_key(row),
                operation=pb.OPERATION_UPSERT,
                version=row.version,
                checksum=row.checksum,
                object_json=codec.canonical_json(doc),
            )
        seq = link.send(pb.Envelope(event=event))
        operation = logfields.DELETE if row.deleted else logfields.UPSERT
        link.pending[seq] = ("event", row.kind, row.name, row.version, operation)
        link.inflight[(row.kind, row.name)] = row.version

    async def answer_resync(self, request: pb.ResyncRequest) -> bool:
        link = self._link
        rows = await link.store.rows(include_deleted=True)
        diff = inventory.compare(
            rows, request.inventory, statuses=True, deleted=lambda row: row.deleted
        )
        for row in diff.send:
            self._send_row(row)
        for row in diff.same:
            if not row.deleted and row.synced_version < row.version:
                # sent before, its ack lost with a session
                link.sent(row.kind, row.name, row.version, logfields.UPSERT)
            await link.store.mark_synced(row.kind, row.name, row.version)
        for _, item in diff.only_theirs:
            link.send(
                pb.Envelope(
                    event=pb.ResourceEvent(
                        key=item.key, operation=pb.OPERATION_DELETE, version=item.version
                    )
                )
            )
        sent = len(diff.send) + len(diff.only_theirs)
        link.metrics.resync_events.inc(sent)
        link.send(pb.Envelope(resync_done=pb.ResyncDone(sent=sent)))
        return True


SIDES: dict[str, type[ManagedSide] | type[AutonomousSide]] = {
    "managed": ManagedSide,
    "autonomous": AutonomousSide,
}
