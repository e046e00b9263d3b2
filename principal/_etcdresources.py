"""The etcd hub store's resources (`apps/<agent>/<Kind>/<name>`): managed agents'
desired state, autonomous agents' mirrors, their reads and their change feed.

A managed resource's version is its key's mod_revision, an autonomous one's the agent's
version; a delete's version is the revision of the delete, and cursors are revisions. A
value written around Mooring that cannot be decoded is skipped (logged once per key and
revision): it must not stop the change feed or a session, and a write of that resource
replaces it. Errors of the etcd layer leave here as they are; the store
(`principal._store`) maps them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from election import etcd
from principal import _etcdkeys as etcdkeys
from principal import _hub as hub
from proto import codec, logfields, objects

__all__ = ["EtcdResources"]

logger = logging.getLogger("principal._store")  # the store's logger, as operators filter it


class EtcdResources:
    """The resources of every agent on `kv`, at `keys`."""

    def __init__(self, kv: etcd.EtcdKV, keys: etcdkeys.Keys) -> None:
        self.kv = kv
        self.keys = keys
        self._deleting: set[bytes] = set()  # mirror keys this store is deleting
        self._corrupt: set[tuple[bytes, int]] = set()  # undecodable records already logged

    def decode(self, agent: str, kind: str, name: str, raw: etcd.KeyValue) -> hub.Resource | None:
        """The record at `raw`, or None (logged once) when it cannot be decoded."""
        try:
            data = json.loads(raw.value)
            origin = data.get("origin", "principal")
            version = int(data["agent_version"]) if origin == "agent" else raw.mod_revision
            obj, checksum = data["object"], data["checksum"]
            if not isinstance(obj, dict) or not isinstance(checksum, str):
                raise TypeError("object must be a mapping and checksum a string")
            return hub.Resource(
                agent=agent,
                kind=kind,
                name=name,
                object=obj,
                checksum=checksum,
                version=version,
                status=data.get("status"),
                status_checksum=data.get("status_checksum", ""),
                origin=origin,
                created_at=str(data.get("created_at", "")),
                updated_at=str(data.get("updated_at", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            seen = (raw.key, raw.mod_revision)
            if seen not in self._corrupt:
                self._corrupt.add(seen)
                logger.warning(
                    "skipping undecodable record %s at revision %d: %s",
                    raw.key.decode(errors="replace")[:200],
                    raw.mod_revision,
                    str(err)[:200],
                    extra=logfields.of(agent=agent, kind=kind, name=name, reason="corrupt"),
                )
            return None

    async def list_resources(self, agent: str) -> tuple[list[hub.Resource], hub.Cursor]:
        """The agent's resources and the store revision they were read at."""
        items, revision = await self.kv.get_prefix(self.keys.apps_of(agent))
        out = []
        for item in items:
            parsed = self.keys.parse_app(item.key)
            resource = self.decode(*parsed, item) if parsed is not None else None
            if resource is not None:
                out.append(resource)
        return out, hub.Cursor(revision)

    async def get_resource(self, agent: str, kind: str, name: str) -> hub.Resource | None:
        raw = await self.kv.get(self.keys.app(agent, kind, name))
        return None if raw is None else self.decode(agent, kind, name, raw)

    async def apply_desired(self, agent: str, doc: Mapping[str, Any]) -> tuple[hub.Resource, bool]:
        """Write a managed agent's desired resource from a manifest; (resource, changed).

        The mode check and the write are one etcd transaction (compared on the agent
        record's revision), so an agent that registers as autonomous meanwhile can
        never end up with a principal-written spec.
        """
        etcdkeys.agent_name(agent)
        kind, name = etcdkeys.kind_and_name(doc)
        obj = objects.synced_object(doc)
        digest = codec.checksum(obj)
        agent_key, app_key = self.keys.agent(agent), self.keys.app(agent, kind, name)
        for _ in range(8):
            raw_agent = await self.kv.get(agent_key)
            if raw_agent is not None and json.loads(raw_agent.value).get("mode") == "autonomous":
                raise hub.ModeConflictError(
                    f"agent {agent} is autonomous: {kind} {name} is owned by the agent and "
                    "cannot be changed from the principal; change it on the agent"
                )
            raw_app = await self.kv.get(app_key)
            current = None if raw_app is None else self.decode(agent, kind, name, raw_app)
            if current is not None:
                if current.checksum == digest:
                    return current, False
            now = hub.now_rfc3339()
            created = current.created_at if current is not None and current.created_at else now
            record = {"object": obj, "checksum": digest, "origin": "principal"}
            value = etcdkeys.dumps({**record, "created_at": created, "updated_at": now})
            puts = [(app_key, value)]
            if raw_agent is None:
                puts.append((agent_key, json.dumps({"mode": "managed"}).encode()))
            revision = await self.kv.txn(
                compare_mod=[
                    (agent_key, 0 if raw_agent is None else raw_agent.mod_revision),
                    (app_key, 0 if raw_app is None else raw_app.mod_revision),
                ],
                puts=puts,
            )
            if revision is not None:
                return hub.Resource(
                    agent, kind, name, obj, digest, revision, created_at=created, updated_at=now
                ), True
        raise hub.StoreError(f"{kind} {name} for agent {agent}: too much contention, try again")

    async def delete_desired(self, agent: str, kind: str, name: str) -> bool:
        raw_agent = await self.kv.get(self.keys.agent(agent))
        if (
            raw_agent is not None
            and json.loads(raw_agent.value).get("mode", "managed") == "autonomous"
        ):
            raise hub.ModeConflictError(
                f"agent {agent} is autonomous: {kind} {name} cannot be deleted from the principal"
            )
        deleted = await self.kv.delete(self.keys.app(agent, kind, name))
        if deleted:
            await self.kv.delete(self.keys.delivered(agent, kind, name))
        return deleted

    async def mirror_upsert(
        self,
        agent: str,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        status: Mapping[str, Any] | None,
    ) -> hub.MirrorWrite:
        """Mirror an autonomous agent's resource ("created", "updated", or "": not newer)."""
        key = self.keys.app(agent, kind, name)
        digest, status_digest = codec.checksum(obj), codec.checksum(status)
        while True:
            raw = await self.kv.get(key)
            current = None if raw is None else self.decode(agent, kind, name, raw)
            if current is not None:
                if current.version > version or (
                    current.checksum == digest and current.status_checksum == status_digest
                ):
                    return ""
            now = hub.now_rfc3339()
            value = {
                "created_at": current.created_at if current and current.created_at else now,
                "updated_at": now,
                "object": obj,
                "checksum": digest,
                "status": status,
                "status_checksum": status_digest,
                "origin": "agent",
                "agent_version": version,
            }
            expected = 0 if raw is None else raw.mod_revision
            if await self.kv.update(key, etcdkeys.dumps(value), mod_revision=expected) is not None:
                return "created" if raw is None else "updated"

    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool:
        key = self.keys.app(agent, kind, name)
        raw = await self.kv.get(key)
        if raw is None:
            return False
        current = self.decode(agent, kind, name, raw)
        if current is not None and current.version > version:
            return False
        self._deleting.add(key)
        return await self.kv.delete_if(key, mod_revision=raw.mod_revision)

    async def watch_resources(self, *, after: hub.Cursor) -> AsyncGenerator[hub.Change, None]:
        """Every change of a resource after revision `after`, in order (CompactedError
        when etcd no longer has them)."""
        feed = self.kv.watch_prefix(self.keys.apps_prefix, start_revision=after + 1)
        async for event in feed:
            parsed = self.keys.parse_app(event.key)
            if parsed is None:
                continue
            agent, kind, name = parsed
            cursor = hub.Cursor(event.mod_revision)
            if event.kind is etcd.WatchKind.DELETE:
                foreign = event.key not in self._deleting
                self._deleting.discard(event.key)
                yield hub.Change(
                    agent, kind, name, True, None, event.mod_revision, cursor, cursor, foreign
                )
                continue
            raw = etcd.KeyValue(event.key, event.value, event.mod_revision, 0, 0)
            decoded = self.decode(agent, kind, name, raw)
            if decoded is None:
                continue  # logged; the next good write of it comes through
            resource = decoded
            if resource.origin == "agent":  # hashed here only, not on every read
                drifted = codec.checksum(resource.object) != resource.checksum
                resource = dataclasses.replace(resource, drifted=drifted)
            yield hub.Change(
                agent,
                kind,
                name,
                False,
                resource,
                resource.version,
                cursor,
                cursor,
                resource.drifted,
            )
