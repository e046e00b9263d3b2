"""The hub store on etcd (`principal._hub.HubStore`): agent registry, desired state,
status, mirrors. The embedded default of `mooring up`.

Key layout (all under a configurable root, default `/mooring/`):

    agents/<agent>                     {"mode": "managed"|"autonomous"}
    apps/<agent>/<Kind>/<name>         one resource of one agent:
        managed:    {"object": {"metadata", "spec"}, "checksum", "origin": "principal"}
                    version = the key's etcd mod_revision
        autonomous: {"object", "checksum", "status", "status_checksum",
                     "origin": "agent", "agent_version"}; version = agent_version
    status/<agent>/<Kind>/<name>       managed agents' reported status:
                    {"status", "status_checksum", "spec_version"}

Status of managed resources lives apart from their spec so that an agent's status
report never wakes the watch that pushes spec changes back to the same agent.

Cursors are etcd revisions; a managed resource's version is its key's mod_revision,
a delete's version the revision of the delete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from election import _errors as cerrors
from election import _etcd as etcd
from principal import _hub as hub
from principal._hub import (
    MODES,
    AgentInUseError,
    AgentRecord,
    Change,
    Cursor,
    Mode,
    ModeConflictError,
    Resource,
    StoreError,
)
from proto import _logfields as logfields
from proto import codec, objects

logger = logging.getLogger(__name__)

__all__ = ["EtcdHubStore"]

TXN_DELETES = 100  # keys deleted per transaction (etcd's default --max-txn-ops is 128)


class EtcdHubStore:
    """Mooring's keys on etcd, as a `HubStore`."""

    def __init__(self, kv: etcd.EtcdKV, *, root: str = "/mooring/") -> None:
        if not root.endswith("/"):
            root += "/"
        self.kv = kv
        self.root = root
        self.apps_prefix = f"{root}apps/".encode()
        self.agents_prefix = f"{root}agents/".encode()
        # Registrations this process has seen confirmed, so a reconnect storm needs no
        # etcd round trip to re-check; `watch_agents` (which every replica runs) keeps
        # it current when `mooring agent set-mode|delete` changes a record elsewhere.
        self._registered: dict[str, Mode] = {}
        self._deleting: set[bytes] = set()  # mirror keys this store is deleting
        self._corrupt: set[tuple[bytes, int]] = set()  # undecodable records already logged

    async def connect(self) -> None:
        await self.kv.connect()

    async def close(self) -> None:
        await self.kv.close()

    # --- keys -----------------------------------------------------------------
    def _agent_key(self, agent: str) -> bytes:
        return self.agents_prefix + agent.encode()

    def agent_of(self, key: bytes) -> str:
        """The agent name of a key under `agents_prefix`."""
        return key[len(self.agents_prefix) :].decode()

    def _app_key(self, agent: str, kind: str, name: str) -> bytes:
        return f"{self.root}apps/{agent}/{kind}/{name}".encode()

    def _status_key(self, agent: str, kind: str, name: str) -> bytes:
        return f"{self.root}status/{agent}/{kind}/{name}".encode()

    def _parse_app_key(self, key: bytes) -> tuple[str, str, str] | None:
        rest = key[len(self.apps_prefix) :].decode()
        parts = rest.split("/")
        return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None

    # --- registry ---------------------------------------------------------------
    async def get_agent(self, name: str) -> AgentRecord | None:
        got = await self.kv.get(self._agent_key(name))
        if got is None:
            return None
        data = json.loads(got.value)
        return AgentRecord(name=name, mode=data.get("mode", "managed"))

    async def list_agents(self) -> list[AgentRecord]:
        items, _ = await self.kv.get_prefix(self.agents_prefix)
        out = []
        for item in items:
            mode = json.loads(item.value).get("mode", "managed")
            out.append(AgentRecord(name=self.agent_of(item.key), mode=mode))
        return sorted(out, key=lambda a: a.name)

    async def register_agent(self, name: str, *, mode: Mode) -> AgentRecord:
        """Register name with mode; idempotent; ModeConflictError if known with another mode."""
        if mode not in MODES:
            raise StoreError(f"unknown mode {mode!r}: expected managed or autonomous")
        _agent_name(name)
        if self._registered.get(name) == mode:
            return AgentRecord(name=name, mode=mode)
        key = self._agent_key(name)
        created = await self.kv.create(key, json.dumps({"mode": mode}).encode())
        if created is None:
            existing = await self.get_agent(name)
            if existing is not None and existing.mode != mode:
                raise ModeConflictError(
                    f"agent {name} is registered as {existing.mode}, not {mode}"
                )
        self._registered[name] = mode
        return AgentRecord(name=name, mode=mode)

    async def set_agent_mode(self, name: str, *, mode: Mode) -> AgentRecord | None:
        if mode not in MODES:
            raise StoreError(f"unknown mode {mode!r}: expected managed or autonomous")
        key = self._agent_key(_agent_name(name))
        for _ in range(8):
            raw = await self.kv.get(key)
            if raw is None:
                return None
            data = json.loads(raw.value)
            if data.get("mode", "managed") != mode:
                data["mode"] = mode
                if await self.kv.update(key, _dumps(data), mod_revision=raw.mod_revision) is None:
                    continue  # changed meanwhile: read again
            self._registered[name] = mode
            return AgentRecord(name=name, mode=mode)
        raise StoreError(f"set mode of agent {name}: too much contention, try again")

    async def delete_agent(self, name: str, *, cascade: bool = False) -> list[Resource] | None:
        key = self._agent_key(_agent_name(name))
        if await self.kv.get(key) is None:
            return None
        raw_apps, _ = await self.kv.get_prefix(f"{self.root}apps/{name}/".encode())
        if raw_apps and not cascade:
            raise AgentInUseError(f"agent {name} has {len(raw_apps)} resource(s) on the hub")
        resources, _ = await self.list_resources(name)
        raw_status, _ = await self.kv.get_prefix(f"{self.root}status/{name}/".encode())
        keys = [item.key for item in raw_apps + raw_status]
        for start in range(0, len(keys), TXN_DELETES):  # etcd caps operations per txn
            await self.kv.txn(deletes=keys[start : start + TXN_DELETES])
        await self.kv.delete(key)
        self._registered.pop(name, None)
        return resources

    # --- resources --------------------------------------------------------------
    def _resource(self, agent: str, kind: str, name: str, raw: etcd.KeyValue) -> Resource | None:
        """The record at `raw`, or None (logged once) when it cannot be decoded: a value
        written around Mooring must not stop the change feed or a session, and a write of
        that resource replaces it."""
        try:
            data = json.loads(raw.value)
            origin = data.get("origin", "principal")
            version = int(data["agent_version"]) if origin == "agent" else raw.mod_revision
            obj, checksum = data["object"], data["checksum"]
            if not isinstance(obj, dict) or not isinstance(checksum, str):
                raise TypeError("object must be a mapping and checksum a string")
            return Resource(
                agent=agent,
                kind=kind,
                name=name,
                object=obj,
                checksum=checksum,
                version=version,
                status=data.get("status"),
                status_checksum=data.get("status_checksum", ""),
                origin=origin,
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

    async def list_resources(self, agent: str) -> tuple[list[Resource], Cursor]:
        """The agent's resources and the store revision they were read at."""
        items, revision = await self.kv.get_prefix(f"{self.root}apps/{agent}/".encode())
        out = []
        for item in items:
            parsed = self._parse_app_key(item.key)
            resource = self._resource(*parsed, item) if parsed is not None else None
            if resource is not None:
                out.append(resource)
        return out, Cursor(revision)

    async def get_resource(self, agent: str, kind: str, name: str) -> Resource | None:
        raw = await self.kv.get(self._app_key(agent, kind, name))
        return None if raw is None else self._resource(agent, kind, name, raw)

    async def apply_desired(self, agent: str, doc: Mapping[str, Any]) -> tuple[Resource, bool]:
        """Write a managed agent's desired resource from a manifest; (resource, changed).

        The mode check and the write are one etcd transaction (compared on the agent
        record's revision), so an agent that registers as autonomous meanwhile can
        never end up with a principal-written spec.
        """
        _agent_name(agent)
        kind, name = _kind_and_name(doc)
        obj = objects.synced_object(doc)
        digest = codec.checksum(obj)
        agent_key, app_key = self._agent_key(agent), self._app_key(agent, kind, name)
        value = _dumps({"object": obj, "checksum": digest, "origin": "principal"})
        for _ in range(8):
            raw_agent = await self.kv.get(agent_key)
            if raw_agent is not None and json.loads(raw_agent.value).get("mode") == "autonomous":
                raise ModeConflictError(
                    f"agent {agent} is autonomous: {kind} {name} is owned by the agent and "
                    "cannot be changed from the principal; change it on the agent"
                )
            raw_app = await self.kv.get(app_key)
            current = None if raw_app is None else self._resource(agent, kind, name, raw_app)
            if current is not None:
                if current.checksum == digest:
                    return current, False
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
                return Resource(agent, kind, name, obj, digest, revision), True
        raise StoreError(f"{kind} {name} for agent {agent}: too much contention, try again")

    async def delete_desired(self, agent: str, kind: str, name: str) -> bool:
        record = await self.get_agent(agent)
        if record is not None and record.mode == "autonomous":
            raise ModeConflictError(
                f"agent {agent} is autonomous: {kind} {name} cannot be deleted from the principal"
            )
        return await self.kv.delete(self._app_key(agent, kind, name))

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
        key = self._app_key(agent, kind, name)
        digest, status_digest = codec.checksum(obj), codec.checksum(status)
        while True:
            raw = await self.kv.get(key)
            current = None if raw is None else self._resource(agent, kind, name, raw)
            if current is not None:
                if current.version > version or (
                    current.checksum == digest and current.status_checksum == status_digest
                ):
                    return False
            value = {
                "object": obj,
                "checksum": digest,
                "status": status,
                "status_checksum": status_digest,
                "origin": "agent",
                "agent_version": version,
            }
            expected = 0 if raw is None else raw.mod_revision
            if await self.kv.update(key, _dumps(value), mod_revision=expected) is not None:
                return True

    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool:
        key = self._app_key(agent, kind, name)
        raw = await self.kv.get(key)
        if raw is None:
            return False
        current = self._resource(agent, kind, name, raw)
        if current is not None and current.version > version:
            return False
        self._deleting.add(key)
        return await self.kv.delete_if(key, mod_revision=raw.mod_revision)

    # --- status of managed resources ----------------------------------------------
    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool:
        if await self.kv.get(self._app_key(agent, kind, name)) is None:
            return False  # no such resource: nothing to report on (as on Kubernetes)
        key = self._status_key(agent, kind, name)
        digest = codec.checksum(status)
        raw = await self.kv.get(key)
        if raw is not None and json.loads(raw.value).get("status_checksum") == digest:
            return False
        value = {"status": status, "status_checksum": digest, "spec_version": spec_version}
        await self.kv.put(key, _dumps(value))
        return True

    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        if kind != "Application":
            return  # an AppProject's status has no conditions
        key = self._status_key(agent, kind, name)
        raw = await self.kv.get(key)
        record: dict[str, Any] = json.loads(raw.value) if raw is not None else {"spec_version": 0}
        status = hub.refusal_conditions(record.get("status"), message)
        record.update(status=status, status_checksum=codec.checksum(status))
        await self.kv.put(key, _dumps(record))

    async def list_status(self, agent: str) -> dict[tuple[str, str], dict[str, Any]]:
        items, _ = await self.kv.get_prefix(f"{self.root}status/{agent}/".encode())
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for item in items:
            _, _, kind, name = item.key.decode().rsplit("/", 3)
            out[(kind, name)] = json.loads(item.value)
        return out

    # --- watches ----------------------------------------------------------------------
    async def watch_agents(self) -> AsyncIterator[frozenset[str]]:
        # One read gives the list and its revision; the watch resumes right after it,
        # so no registration falls between the two.
        try:
            items, revision = await self.kv.get_prefix(self.agents_prefix)
            agents = {self.agent_of(item.key) for item in items}
            self._registered = {n: m for n, m in self._registered.items() if n in agents}
            for item in items:
                self._remember(self.agent_of(item.key), item.value)
            yield frozenset(agents)
            async for event in self.kv.watch_prefix(
                self.agents_prefix, start_revision=revision + 1
            ):
                name = self.agent_of(event.key)
                if event.kind is etcd.WatchKind.DELETE:
                    agents.discard(name)
                    self._registered.pop(name, None)
                else:
                    agents.add(name)
                    self._remember(name, event.value)
                yield frozenset(agents)
        except cerrors.CoordinationError as err:
            raise StoreError(f"agent registry watch on etcd: {err}") from err

    def _remember(self, name: str, value: bytes) -> None:
        """Cache the mode a registry record says (forget it when undecodable)."""
        try:
            mode = json.loads(value).get("mode", "managed")
        except (ValueError, AttributeError):
            mode = None
        if mode in MODES:
            self._registered[name] = mode
        else:
            self._registered.pop(name, None)

    async def cursor(self) -> Cursor:
        try:
            return Cursor(await self.kv.revision())
        except cerrors.CoordinationError as err:
            raise StoreError(f"etcd revision: {err}") from err

    async def watch_resources(self, *, after: Cursor) -> AsyncIterator[Change]:
        try:
            async for event in self.kv.watch_prefix(self.apps_prefix, start_revision=after + 1):
                parsed = self._parse_app_key(event.key)
                if parsed is None:
                    continue
                agent, kind, name = parsed
                cursor = Cursor(event.mod_revision)
                if event.kind is etcd.WatchKind.DELETE:
                    foreign = event.key not in self._deleting
                    self._deleting.discard(event.key)
                    yield Change(
                        agent, kind, name, True, None, event.mod_revision, cursor, cursor, foreign
                    )
                else:
                    raw = etcd.KeyValue(event.key, event.value, event.mod_revision, 0, 0)
                    decoded = self._resource(agent, kind, name, raw)
                    if decoded is None:
                        continue  # logged; the next good write of it comes through
                    resource = decoded
                    if resource.origin == "agent":  # hashed here only, not on every read
                        drifted = codec.checksum(resource.object) != resource.checksum
                        resource = dataclasses.replace(resource, drifted=drifted)
                    yield Change(
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
        except cerrors.CompactedError as err:
            raise hub.HistoryLostError(
                f"etcd compacted the changes after revision {after}: {err}",
                resume=Cursor(err.compacted_revision - 1),
            ) from err
        except cerrors.CoordinationError as err:
            raise StoreError(f"resource watch on etcd: {err}") from err


def _dumps(value: Any) -> bytes:
    return codec.canonical_json(value).encode()


def _agent_name(name: str) -> str:
    try:
        return objects.validate_agent_name(name)
    except objects.InvalidObjectError as err:
        raise StoreError(str(err)) from err


def _kind_and_name(doc: Mapping[str, Any]) -> tuple[str, str]:
    try:
        return objects.validate_manifest(doc)
    except objects.InvalidObjectError as err:
        raise StoreError(str(err)) from err
