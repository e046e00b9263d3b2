"""The Kubernetes hub store's agent registry: one labelled namespace per agent.

Agent X is namespace PREFIX+X, carrying labels `mooring.io/hub=NAME`,
`mooring.io/agent=X` and `mooring.io/mode=managed|autonomous`. Registering creates the
namespace or labels an existing one; unregistering removes those labels and keeps the
namespace. Every label write compares the namespace's resourceVersion, reading it again
on a conflict. The modes seen are cached per process; `watch_agents` keeps the cache
current when a mode changes elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from election import errors as cerrors
from election import kubeobjects as kobj
from principal import _hub as hub
from principal import _kubemapping as kubemap
from proto import objects

__all__ = ["NEGATIVE_TTL", "KubeAgents"]

NEGATIVE_TTL = 2.0  # seconds a namespace found not to be an agent's is not asked again


class KubeAgents:
    """The agents of hub `hub_name` (namespaces `prefix`+NAME) through `client`."""

    def __init__(self, client: kobj.KubeObjects, *, hub_name: str, prefix: str) -> None:
        self.client = client
        self.hub = hub_name
        self.prefix = prefix
        self.selector = f"{kubemap.HUB_LABEL}={hub_name},{kubemap.AGENT_LABEL}"
        self._registered: dict[str, hub.Mode] = {}
        self._not_agents: dict[str, float] = {}  # namespace -> monotonic time of the answer

    def namespace(self, agent: str) -> str:
        namespace = self.prefix + objects.validate_agent_name(agent)
        try:
            return objects.validate_agent_name(namespace)
        except objects.InvalidObjectError as err:
            raise hub.StoreError(f"agent {agent}: namespace {namespace[:80]!r} is invalid") from err

    def _agent_of(self, namespace: Mapping[str, Any]) -> hub.AgentRecord | None:
        labels = namespace.get("metadata", {}).get("labels") or {}
        if labels.get(kubemap.HUB_LABEL) != self.hub or kubemap.AGENT_LABEL not in labels:
            return None
        mode = labels.get(kubemap.MODE_LABEL, "managed")
        return hub.AgentRecord(
            labels[kubemap.AGENT_LABEL], mode if mode in hub.MODES else "managed"
        )

    async def get_agent(self, name: str, *, cached: bool = False) -> hub.AgentRecord | None:
        if cached and name in self._registered:
            return hub.AgentRecord(name, self._registered[name])
        try:
            namespace = self.namespace(name)
        except (hub.StoreError, objects.InvalidObjectError):
            return None
        found = await kubemap.call(self.client.get(kobj.NAMESPACES, namespace))
        return None if found is None else self._agent_of(found)

    async def list_agents(self) -> list[hub.AgentRecord]:
        items, _ = await kubemap.call(
            self.client.list(kobj.NAMESPACES, label_selector=self.selector)
        )
        found = [a for a in (self._agent_of(item) for item in items) if a is not None]
        return sorted(found, key=lambda a: a.name)

    async def register_agent(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord:
        if mode not in hub.MODES:
            raise hub.StoreError(f"unknown mode {mode!r}: expected managed or autonomous")
        try:
            namespace = self.namespace(name)
        except objects.InvalidObjectError as err:
            raise hub.StoreError(str(err)) from err
        if self._registered.get(name) == mode:
            return hub.AgentRecord(name, mode)
        labels = {
            kubemap.HUB_LABEL: self.hub,
            kubemap.AGENT_LABEL: name,
            kubemap.MODE_LABEL: mode,
            kubemap.MANAGED_BY_LABEL: "mooring",
        }
        for _ in range(kubemap.RETRIES):
            found = await kubemap.call(self.client.get(kobj.NAMESPACES, namespace))
            if found is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": namespace, "labels": labels},
                }
                try:
                    await self.client.create(kobj.NAMESPACES, body)
                except cerrors.ConflictError:
                    continue  # created meanwhile: look again
                except cerrors.CoordinationError as err:
                    raise hub.StoreError(f"register agent {name}: {err}") from err
                break
            existing = found.get("metadata", {}).get("labels") or {}
            if existing.get(kubemap.HUB_LABEL, self.hub) != self.hub:
                raise hub.StoreError(
                    f"namespace {namespace} belongs to Mooring hub {existing[kubemap.HUB_LABEL]!r}"
                )
            record = self._agent_of(found)
            if record is not None:
                if record.mode != mode:
                    raise hub.ModeConflictError(
                        f"agent {name} is registered as {record.mode}, not {mode}"
                    )
                break
            patch = {
                "metadata": {
                    "labels": labels,
                    "resourceVersion": found["metadata"]["resourceVersion"],
                }
            }
            try:
                await self.client.patch(kobj.NAMESPACES, namespace, patch)
            except cerrors.ConflictError:
                continue
            except cerrors.CoordinationError as err:
                raise hub.StoreError(f"register agent {name}: {err}") from err
            break
        else:
            raise hub.StoreError(f"register agent {name}: too much contention, try again")
        self._registered[name] = mode
        self._not_agents.pop(namespace, None)
        return hub.AgentRecord(name, mode)

    async def _relabel(
        self, name: str, labels: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    ) -> hub.AgentRecord | None:
        """Merge-patch the agent's namespace with `labels(namespace)` (None: nothing to do),
        compared on its resourceVersion; the record before the patch, None if no agent."""
        namespace = self.namespace(name)
        for _ in range(kubemap.RETRIES):
            found = await kubemap.call(self.client.get(kobj.NAMESPACES, namespace))
            record = None if found is None else self._agent_of(found)
            if found is None or record is None or record.name != name:
                return None
            planned = labels(found)
            if planned is None:
                return record
            patch = {
                "metadata": {
                    "labels": planned,
                    "resourceVersion": found["metadata"]["resourceVersion"],
                }
            }
            try:
                await self.client.patch(kobj.NAMESPACES, namespace, patch)
            except cerrors.ConflictError:
                continue
            except cerrors.CoordinationError as err:
                raise hub.StoreError(f"agent {name}: {err}") from err
            return record
        raise hub.StoreError(f"agent {name}: too much contention, try again")

    async def set_agent_mode(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord | None:
        if mode not in hub.MODES:
            raise hub.StoreError(f"unknown mode {mode!r}: expected managed or autonomous")

        def labels(namespace: Mapping[str, Any]) -> dict[str, Any] | None:
            current = (namespace.get("metadata", {}).get("labels") or {}).get(kubemap.MODE_LABEL)
            return None if current == mode else {kubemap.MODE_LABEL: mode}

        if await self._relabel(kubemap.valid_agent(name), labels) is None:
            return None
        self._registered[name] = mode
        return hub.AgentRecord(name, mode)

    async def unregister(self, name: str) -> bool:
        """Remove Mooring's labels from agent `name`'s namespace (which stays: it may hold
        more than Mooring's objects, and may have existed before); False if no agent."""

        def labels(found: Mapping[str, Any]) -> dict[str, Any]:
            mine = {kubemap.HUB_LABEL: None, kubemap.AGENT_LABEL: None, kubemap.MODE_LABEL: None}
            current = found.get("metadata", {}).get("labels") or {}
            if current.get(kubemap.MANAGED_BY_LABEL) == "mooring":
                mine[kubemap.MANAGED_BY_LABEL] = None
            return mine

        if await self._relabel(name, labels) is None:
            return False
        self._registered.pop(name, None)
        self._not_agents.pop(self.namespace(name), None)
        return True

    async def mode(self, agent: str) -> hub.Mode | None:
        """The agent's mode, None if it is not registered."""
        # One read per agent and process (it saves one apiserver request per apply_desired);
        # a replica's watch_agents keeps the cache current when a mode changes elsewhere.
        if agent in self._registered:
            return self._registered[agent]
        record = await self.get_agent(agent)
        if record is None:
            return None
        self._registered[agent] = record.mode
        return record.mode

    async def agent_of_namespace(self, namespace: str) -> str | None:
        """The agent whose namespace `namespace` is, None if none (remembered a while)."""
        if not namespace.startswith(self.prefix):
            return None
        agent = namespace.removeprefix(self.prefix)
        if agent in self._registered:
            return agent
        asked = self._not_agents.get(namespace)
        if asked is not None and time.monotonic() - asked < NEGATIVE_TTL:
            return None
        record = await self.get_agent(agent)
        if record is None or record.name != agent:
            self._not_agents[namespace] = time.monotonic()
            return None
        self._registered[agent] = record.mode
        return agent

    async def watch_agents(self) -> AsyncIterator[frozenset[str]]:
        items, rv = await kubemap.call(
            self.client.list(kobj.NAMESPACES, label_selector=self.selector)
        )
        agents: dict[str, str] = {}  # namespace -> agent
        for item in items:
            record = self._agent_of(item)
            if record is not None:
                agents[item["metadata"]["name"]] = record.name
                self._registered[record.name] = record.mode
        listed = set(agents.values())
        self._registered = {n: m for n, m in self._registered.items() if n in listed}
        yield frozenset(agents.values())
        try:
            async for event in self.client.watch(
                kobj.NAMESPACES, resource_version=rv, label_selector=self.selector
            ):
                if event.type == "BOOKMARK":
                    continue
                name = event.object.get("metadata", {}).get("name", "")
                record = self._agent_of(event.object)
                if event.type == "DELETED" or record is None:
                    gone = agents.pop(name, None)
                    if gone is not None:  # unregistered elsewhere (`mooring agent delete`)
                        self._registered.pop(gone, None)
                else:
                    agents[name] = record.name
                    self._registered[record.name] = record.mode
                yield frozenset(agents.values())
        except cerrors.CoordinationError as err:
            raise hub.StoreError(f"agent registry watch: {err}") from err
