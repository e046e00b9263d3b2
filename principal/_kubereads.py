"""Reading the Kubernetes hub store: an agent's objects, what its agent reported, the
cursor, and the change feed.

The feed is one watch per kind across all namespaces (list+watch, bookmarks, resumed
from a resourceVersion), kept to this hub's agent namespaces. 410 Gone is
HistoryLostError: the dispatcher has every session resync. An object being deleted
(deletionTimestamp set, finalizers pending) is deleted to Mooring. Argo CD's CRDs
declare no status subresource, so a status write bumps the object too: the feed
compares the synced part's checksum and leaves status-only writes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from election import errors as cerrors
from election import kubeobjects as kobj
from principal import _hub as hub
from principal import _kubeagents as kubeagents
from principal import _kubemapping as kubemap
from proto import codec

__all__ = ["KubeReads"]

KINDS = kubemap.KINDS


class KubeReads:
    """The hub's Argo CD objects in the namespaces of `agents`, read through `client`."""

    def __init__(self, client: kobj.KubeObjects, *, agents: kubeagents.KubeAgents) -> None:
        self.client = client
        self.agents = agents
        self._deleting: set[tuple[str, str, str]] = set()  # (namespace, kind, name) of mirrors

    async def get(self, agent: str, kind: str, name: str) -> dict[str, Any] | None:
        """Agent `agent`'s object `kind`/`name` as stored (deleting or not), None if none."""
        if kind not in KINDS:
            raise hub.StoreError(f"unsupported kind {kind!r}: expected Application or AppProject")
        found: dict[str, Any] | None = await kubemap.call(
            self.client.get(KINDS[kind], name, namespace=self.agents.namespace(agent))
        )
        if found is not None:
            found.setdefault("kind", kind)
        return found

    async def get_resource(self, agent: str, kind: str, name: str) -> hub.Resource | None:
        found = await self.get(agent, kind, name)
        if found is None or found.get("metadata", {}).get("deletionTimestamp"):
            return None
        return kubemap.resource(agent, found)

    async def list_resources(self, agent: str) -> tuple[list[hub.Resource], hub.Cursor]:
        namespace = self.agents.namespace(agent)
        out: list[hub.Resource] = []
        cursors: list[hub.Cursor] = []
        for kind_name, kind in KINDS.items():
            items, rv = await kubemap.call(self.client.list(kind, namespace=namespace))
            cursors.append(kubemap.cursor(rv))
            for item in items:
                item.setdefault("kind", kind_name)
                if not item.get("metadata", {}).get("deletionTimestamp"):
                    out.append(kubemap.resource(agent, item))
        # The earlier list's position: a change between the two lists is delivered again
        # by the feed rather than lost.
        return sorted(out, key=lambda r: (r.kind, r.name)), min(cursors)

    async def list_status(self, agent: str) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        namespace = self.agents.namespace(agent)
        for kind_name, kind in KINDS.items():
            items, _ = await kubemap.call(self.client.list(kind, namespace=namespace))
            for item in items:
                annotations = kubemap.annotations_of(item)
                status = item.get("status")
                if annotations.get(kubemap.ORIGIN) == "agent" or not status:
                    continue
                out[(kind_name, item["metadata"]["name"])] = {
                    "status": status,
                    "status_checksum": codec.checksum(status),
                    "spec_version": int(annotations.get(kubemap.STATUS_SPEC_VERSION, "0")),
                }
        return out

    async def list_deliveries(self, agent: str) -> dict[tuple[str, str], hub.Delivery]:
        out: dict[tuple[str, str], hub.Delivery] = {}
        for kind_name, kind in KINDS.items():
            items, _ = await kubemap.call(
                self.client.list(kind, namespace=self.agents.namespace(agent))
            )
            for item in items:
                said = kubemap.annotations_of(item).get(kubemap.DELIVERED)
                try:
                    delivery = hub.Delivery.from_data(json.loads(said)) if said else None
                except ValueError:
                    delivery = None  # written around Mooring: not an answer, so not shown
                if delivery is not None:
                    out[(kind_name, item["metadata"]["name"])] = delivery
        return out

    # --- the change feed ----------------------------------------------------------------------
    async def cursor(self) -> hub.Cursor:
        cursors = []
        for kind in KINDS.values():
            _, rv = await kubemap.call(
                self.client.list(kind, label_selector="mooring.io/none-such")
            )
            cursors.append(kubemap.cursor(rv))
        return min(cursors)

    def expect_deletion(self, namespace: str, kind: str, name: str) -> None:
        """This store deletes the mirror `kind`/`name` in `namespace`: the feed does not
        report that deletion as someone else's (drift)."""
        self._deleting.add((namespace, kind, name))

    async def watch_resources(self, *, after: hub.Cursor) -> AsyncIterator[hub.Change]:
        queue: asyncio.Queue[tuple[str, kobj.WatchEvent] | BaseException] = asyncio.Queue()
        positions = {kind: after for kind in KINDS}

        async def pump(kind_name: str) -> None:
            try:
                async for event in self.client.watch(KINDS[kind_name], resource_version=str(after)):
                    queue.put_nowait((kind_name, event))
            except BaseException as err:
                queue.put_nowait(err)
                raise

        tasks = [asyncio.create_task(pump(k), name=f"kubehub-watch-{k}") for k in KINDS]
        seen: dict[tuple[str, str, str], str] = {}  # (namespace, kind, name) -> checksum
        try:
            while True:
                item = await queue.get()
                if isinstance(item, kobj.GoneError):
                    raise hub.HistoryLostError(
                        f"the apiserver no longer holds changes after {after}: {item}",
                        resume=await self.cursor(),
                    ) from item
                if isinstance(item, cerrors.CoordinationError):
                    raise hub.StoreError(f"resource watch: {item}") from item
                if isinstance(item, BaseException):
                    raise item
                kind_name, event = item
                if not event.resource_version:
                    continue
                position = kubemap.cursor(event.resource_version)
                positions[kind_name] = max(positions[kind_name], position)
                if event.type == "BOOKMARK":
                    continue
                meta = event.object.get("metadata", {})
                namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
                agent = await self.agents.agent_of_namespace(namespace)
                if agent is None:
                    continue
                key = (namespace, kind_name, name)
                cursor = min(positions.values())
                if event.type == "DELETED" or meta.get("deletionTimestamp"):
                    if seen.get(key) == "deleted":
                        continue
                    seen[key] = "deleted"
                    mirror = (meta.get("annotations") or {}).get(kubemap.ORIGIN) == "agent"
                    foreign = mirror and key not in self._deleting
                    self._deleting.discard(key)
                    yield hub.Change(
                        agent, kind_name, name, True, None, position, position, cursor, foreign
                    )
                    continue
                event.object.setdefault("kind", kind_name)
                resource = kubemap.resource(agent, event.object)
                fingerprint = f"{resource.checksum}:{resource.status_checksum}"
                if seen.get(key) == fingerprint:
                    continue  # a write that left the synced part as it was (a status report)
                seen[key] = fingerprint
                yield hub.Change(
                    agent,
                    kind_name,
                    name,
                    False,
                    resource,
                    resource.version,
                    position,
                    cursor,
                    resource.drifted,
                )
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
