"""The etcd hub store's agent registry (`agents/<agent>`: `{"mode": ...}`).

Registrations this process has seen confirmed are cached, so a reconnect storm needs no
etcd round trip to re-check; `watch_agents` (which every replica runs) keeps the cache
current when `mooring agent set-mode|delete` changes a record elsewhere. Deleting an
agent deletes everything stored under its name. Errors of the etcd layer leave here as
they are; the store (`principal._store`) maps them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

from election import etcd
from principal import _etcdkeys as etcdkeys
from principal import _etcdresources as etcdresources
from principal import _hub as hub

__all__ = ["EtcdAgents"]


class EtcdAgents:
    """The agents registered on `kv`, at `keys`; `resources` lists what a delete removes."""

    def __init__(
        self, kv: etcd.EtcdKV, keys: etcdkeys.Keys, *, resources: etcdresources.EtcdResources
    ) -> None:
        self.kv = kv
        self.keys = keys
        self.resources = resources
        self._registered: dict[str, hub.Mode] = {}

    async def get_agent(self, name: str, *, cached: bool = False) -> hub.AgentRecord | None:
        if cached and name in self._registered:
            return hub.AgentRecord(name=name, mode=self._registered[name])
        got = await self.kv.get(self.keys.agent(name))
        if got is None:
            return None
        data = json.loads(got.value)
        return hub.AgentRecord(name=name, mode=data.get("mode", "managed"))

    async def list_agents(self) -> list[hub.AgentRecord]:
        items, _ = await self.kv.get_prefix(self.keys.agents_prefix)
        out = []
        for item in items:
            mode = json.loads(item.value).get("mode", "managed")
            out.append(hub.AgentRecord(name=self.keys.agent_of(item.key), mode=mode))
        return sorted(out, key=lambda a: a.name)

    async def register_agent(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord:
        """Register name with mode; idempotent; ModeConflictError if known with another mode."""
        if mode not in hub.MODES:
            raise hub.StoreError(f"unknown mode {mode!r}: expected managed or autonomous")
        etcdkeys.agent_name(name)
        if self._registered.get(name) == mode:
            return hub.AgentRecord(name=name, mode=mode)
        key = self.keys.agent(name)
        created = await self.kv.create(key, json.dumps({"mode": mode}).encode())
        if created is None:
            existing = await self.get_agent(name)
            if existing is not None and existing.mode != mode:
                raise hub.ModeConflictError(
                    f"agent {name} is registered as {existing.mode}, not {mode}"
                )
        self._registered[name] = mode
        return hub.AgentRecord(name=name, mode=mode)

    async def set_agent_mode(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord | None:
        if mode not in hub.MODES:
            raise hub.StoreError(f"unknown mode {mode!r}: expected managed or autonomous")
        key = self.keys.agent(etcdkeys.agent_name(name))
        for _ in range(8):
            raw = await self.kv.get(key)
            if raw is None:
                return None
            data = json.loads(raw.value)
            if data.get("mode", "managed") != mode:
                data["mode"] = mode
                updated = await self.kv.update(
                    key, etcdkeys.dumps(data), mod_revision=raw.mod_revision
                )
                if updated is None:
                    continue  # changed meanwhile: read again
            self._registered[name] = mode
            return hub.AgentRecord(name=name, mode=mode)
        raise hub.StoreError(f"set mode of agent {name}: too much contention, try again")

    async def delete_agent(self, name: str, *, cascade: bool = False) -> list[hub.Resource] | None:
        key = self.keys.agent(etcdkeys.agent_name(name))
        if await self.kv.get(key) is None:
            return None
        raw_apps, _ = await self.kv.get_prefix(self.keys.apps_of(name))
        if raw_apps and not cascade:
            raise hub.AgentInUseError(f"agent {name} has {len(raw_apps)} resource(s) on the hub")
        resources, _ = await self.resources.list_resources(name)
        raw_status, _ = await self.kv.get_prefix(self.keys.status_of(name))
        raw_delivered, _ = await self.kv.get_prefix(self.keys.delivered_of(name))
        keys = [item.key for item in raw_apps + raw_status + raw_delivered]
        for start in range(0, len(keys), etcdkeys.TXN_DELETES):  # etcd caps operations per txn
            await self.kv.txn(deletes=keys[start : start + etcdkeys.TXN_DELETES])
        await self.kv.delete(key)
        self._registered.pop(name, None)
        return resources

    async def watch_agents(self) -> AsyncGenerator[frozenset[str], None]:
        """The registered agents' names, then again at every change of the registry."""
        # One read gives the list and its revision; the watch resumes right after it,
        # so no registration falls between the two.
        items, revision = await self.kv.get_prefix(self.keys.agents_prefix)
        agents = {self.keys.agent_of(item.key) for item in items}
        self._registered = {n: m for n, m in self._registered.items() if n in agents}
        for item in items:
            self._remember(self.keys.agent_of(item.key), item.value)
        yield frozenset(agents)
        feed = self.kv.watch_prefix(self.keys.agents_prefix, start_revision=revision + 1)
        async for event in feed:
            name = self.keys.agent_of(event.key)
            if event.kind is etcd.WatchKind.DELETE:
                agents.discard(name)
                self._registered.pop(name, None)
            else:
                agents.add(name)
                self._remember(name, event.value)
            yield frozenset(agents)

    def _remember(self, name: str, value: bytes) -> None:
        """Cache the mode a registry record says (forget it when undecodable)."""
        try:
            mode = json.loads(value).get("mode", "managed")
        except (ValueError, AttributeError):
            mode = None
        if mode in hub.MODES:
            self._registered[name] = mode
        else:
            self._registered.pop(name, None)
