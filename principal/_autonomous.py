"""Autonomous sync: the workload cluster owns its Applications; the hub keeps a mirror.

The hub sends ResyncRequest(the mirror's inventory); the agent sends what differs,
ResyncDone, then every later local change. Each event is written to the mirror before
it is acknowledged (no ack, no loss). A mirror changed or deleted on the hub behind
Mooring's back (drift) makes the hub ask again, and the agent's copy wins.
"""

from __future__ import annotations

import logging

from principal import _dispatch as dispatch
from principal import _hub as hub
from principal import _sync as sync
from principal._session import CloseReason
from proto import logfields, objects, pb

__all__ = ["AutonomousSync"]

logger = logging.getLogger(__name__)


class AutonomousSync:
    __slots__ = ("_link",)

    def __init__(self, link: sync.Link, hello: list[pb.Hello], *, started: float) -> None:
        self._link = link
        hello.clear()  # the hub sends its inventory; the agent's (in its hello) is not read

    async def run(self) -> None:
        """Ask the agent for what differs from the mirror, at the start and again whenever
        the mirror is changed or deleted behind Mooring's back (repairing the drift)."""
        link = self._link
        queue = link.dispatcher.subscribe(link.session.agent)
        try:
            await self._request()
            while True:
                changes = [await queue.get()]
                while queue.qsize():  # one request answers every drift queued so far
                    changes.append(await queue.get())
                if any(c is dispatch.RESYNC for c in changes):
                    link.session.close(
                        CloseReason.RESYNC, "watch history lost; resync on reconnect"
                    )
                    return
                drifted = [c for c in changes if isinstance(c, hub.Change) and c.drifted]
                if not drifted:
                    continue
                change = drifted[0]
                logger.info(
                    "agent %s: %s %s changed on the hub behind Mooring's back; asking the agent",
                    link.session.agent,
                    change.kind,
                    change.name,
                    extra=link.fields(kind=change.kind, name=change.name, reason="drift"),
                )
                link.metrics.drift_repairs.inc()
                await self._request()
        finally:
            link.dispatcher.unsubscribe(link.session.agent, queue)

    async def _request(self) -> None:
        link = self._link
        resources, _ = await link.store_call(link.store.list_resources(link.session.agent))
        link.session.mirrored = len(resources)
        inventory = [
            pb.InventoryItem(
                key=sync.key(r.kind, r.name),
                version=r.version,
                checksum=r.checksum,
                status_checksum=r.status_checksum,
            )
            for r in resources
        ]
        link.send(pb.Envelope(resync_request=pb.ResyncRequest(inventory=inventory)))

    async def on_status(self, envelope: pb.Envelope) -> None:
        self._link.ack(envelope.seq, error="autonomous agents send status inside resource events")

    async def on_event(self, envelope: pb.Envelope) -> None:
        link, event = self._link, envelope.event
        kind = sync.resource_kind(link, envelope.seq, event.key, what="resource event")
        if kind is None:
            return
        name = event.key.name
        if event.operation == pb.OPERATION_DELETE:
            operation = logfields.DELETE
            changed = await link.store_call(
                link.store.mirror_delete(link.session.agent, kind, name, version=event.version)
            )
            link.session.mirrored -= bool(changed)
        elif event.operation == pb.OPERATION_UPSERT:
            try:
                doc = objects.load_json(event.object_json, what=f"{kind} {name}")
                obj = objects.synced_object(doc)  # the agent checksummed exactly this part
                status = doc.get("status")
                named = {**obj, "kind": kind, "status": status}  # a status must be a map
                named["metadata"] = {**obj["metadata"], "name": name}
                objects.validate_manifest(named)
            except objects.InvalidObjectError as err:
                link.ack(envelope.seq, error=str(err))
                return
            except (ValueError, AttributeError):
                link.ack(envelope.seq, error=f"{kind} {name}: object is not a JSON object")
                return
            operation = logfields.UPSERT
            if refusal := await self._over_quota(kind, name):
                link.ack(envelope.seq, error=refusal)
                return
            wrote = await link.store_call(
                link.store.mirror_upsert(
                    link.session.agent, kind, name, obj=obj, version=event.version, status=status
                )
            )
            link.session.mirrored += wrote == "created"
            changed = bool(wrote)
        else:
            link.ack(envelope.seq, error="resource event without an operation")
            return
        if changed:  # not for what the mirror already holds (a resent event)
            logger.info(
                "agent %s: deleted %s %s from the hub (version %d)"
                if operation == logfields.DELETE
                else "agent %s: applied %s %s to the hub (version %d)",
                link.session.agent,
                kind,
                name,
                event.version,
                extra=link.fields(kind=kind, name=name, version=event.version, operation=operation),
            )
        link.ack(envelope.seq)

    async def _over_quota(self, kind: str, name: str) -> str:
        """Why a new object is refused ("" if it is not): the hub keeps at most
        max_resources of each agent's. Below the limit nothing is read; at it, one read
        tells a new object from an update of one the hub has."""
        link = self._link
        session, limit = link.session, link.settings.max_resources
        if session.mirrored < limit:
            return ""
        if await link.store_call(link.store.get_resource(session.agent, kind, name)):
            return ""
        refusal = (
            f"quota: agent {session.agent} has {session.mirrored} objects on the hub, the most"
            f" it may have ({limit}, `principal serve --max-resources-per-agent`); {kind}"
            f" {name} is not mirrored until others are deleted"
        )
        logger.warning(
            "agent %s: %s",
            session.agent,
            refusal,
            extra=link.fields(kind=kind, name=name, reason="quota"),
        )
        return refusal
