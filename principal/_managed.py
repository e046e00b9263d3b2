"""Managed sync: the hub owns each Application's spec and pushes it; the agent reports status.

The session starts with the agent's inventory (in its hello): the hub sends what differs,
then ResyncDone, then every later change of the agent's desired state. The agent acks
each event and sends StatusUpdates, which land in the hub's objects' status.
"""

from __future__ import annotations

import time

from principal import _dispatch as dispatch
from principal import _hub as hub
from principal import _sync as sync
from principal._session import CloseReason
from proto import inventory, objects, pb

__all__ = ["ManagedSync"]


class ManagedSync:
    __slots__ = ("_hello", "_link", "_started")

    def __init__(self, link: sync.Link, hello: list[pb.Hello], *, started: float) -> None:
        self._link = link
        # The hello (its inventory, ~1.5 KB) comes in a box the resync empties, so no
        # frame keeps it for the whole session.
        self._hello = hello
        self._started = started  # monotonic: when the stream began (resync_seconds)

    async def run(self) -> None:
        link = self._link
        queue = link.dispatcher.subscribe(link.session.agent)
        try:
            snapshot = await self._resync(self._hello.pop())
            while True:
                change = await queue.get()
                if change is dispatch.RESYNC:
                    link.session.close(
                        CloseReason.RESYNC, "watch history lost; resync on reconnect"
                    )
                    return
                assert isinstance(change, hub.Change)
                if change.position <= snapshot:  # already in the snapshot
                    continue
                if change.deleted:
                    event = pb.ResourceEvent(
                        key=sync.key(change.kind, change.name),
                        operation=pb.OPERATION_DELETE,
                        version=change.version,
                    )
                elif change.resource is not None:
                    event = sync.upsert_event(change.resource)
                else:
                    continue
                link.send(pb.Envelope(event=event))
        finally:
            link.dispatcher.unsubscribe(link.session.agent, queue)

    async def _resync(self, hello: pb.Hello) -> hub.Cursor:
        """Send what differs from the agent's inventory, then ResyncDone; the snapshot's
        cursor. Its own frame, so the snapshot is freed once sent, not kept per session."""
        link = self._link
        resources, cursor = await link.store_call(link.store.list_resources(link.session.agent))
        diff = inventory.compare(resources, hello.inventory, statuses=False)
        for resource in diff.send:
            link.send(pb.Envelope(event=sync.upsert_event(resource)))
        for kind, item in diff.only_theirs:
            link.send(
                pb.Envelope(
                    event=pb.ResourceEvent(
                        # Above every version the snapshot holds; the resyncing agent forces it.
                        key=sync.key(kind, item.key.name),
                        operation=pb.OPERATION_DELETE,
                        version=cursor,
                    )
                )
            )
        sent = len(diff.send) + len(diff.only_theirs)
        link.send(pb.Envelope(resync_done=pb.ResyncDone(sent=sent)))
        link.metrics.resync_events.inc(sent)
        link.metrics.resync_seconds.observe(time.monotonic() - self._started)
        return cursor

    async def on_event(self, envelope: pb.Envelope) -> None:
        self._link.ack(envelope.seq, error="managed agents cannot change their desired state")

    async def on_status(self, envelope: pb.Envelope) -> None:
        link, update = self._link, envelope.status
        kind = sync.resource_kind(link, envelope.seq, update.key, what="status update")
        if kind is None:
            return
        try:
            what = f"status of {kind} {update.key.name}"
            status = objects.load_json(update.status_json, what=what) if update.status_json else {}
            if not isinstance(status, dict):  # the stores and Argo CD take a map, nothing else
                raise objects.InvalidObjectError(f"{what} is not a JSON object")
        except objects.InvalidObjectError as err:
            link.ack(envelope.seq, error=str(err))
            return
        await link.store_call(
            link.store.put_status(
                link.session.agent,
                kind,
                update.key.name,
                status=status,
                spec_version=update.version,
            )
        )
        link.ack(envelope.seq)
