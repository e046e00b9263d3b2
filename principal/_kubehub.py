"""The hub store on Kubernetes (`principal._hub.HubStore`): Argo CD's own custom resources.

URL: `kubernetes://[?kubeconfig=PATH][&hub=NAME][&namespace-prefix=PREFIX][&namespace=NS]`;
without `kubeconfig`, $KUBECONFIG, then the in-cluster configuration.

- Agent registry: agent X is namespace PREFIX+X (default: X itself, as upstream's
  namespace-per-agent), carrying labels `mooring.io/hub=NAME` (so several hubs share a
  cluster), `mooring.io/agent=X` and `mooring.io/mode=managed|autonomous`. Registering
  creates the namespace, or labels an existing one; a mode never changes by itself
  (`set_agent_mode` relabels it). Deleting an agent removes those labels and keeps the
  namespace: it may hold more than Mooring's objects, and it may have existed before.
- Resources: the agent's Applications and AppProjects (`argoproj.io/v1alpha1`) in its
  namespace, exactly as Argo CD defines them, so `kubectl get applications -A` shows
  them. What travels is `proto.objects.synced_object` of them; Mooring's own
  bookkeeping lives in `mooring.io/*` annotations that never travel: `origin: agent`
  and `agent-version` on an autonomous agent's mirrors, `status-spec-version` beside a
  managed object's reported status.
- Versions and cursors are resourceVersions read as integers (etcd revisions: ordered,
  as kube-apiserver's watch cache itself compares them). A managed object's version is
  its resourceVersion when its synced part last changed. Argo CD's CRDs declare no
  status subresource (`subresources: {}`), so status is written with the object and
  bumps generation too; the change feed therefore compares the synced part's checksum
  and leaves status-only writes out, rather than trusting metadata.generation (which
  also stays put when only labels, annotations or finalizers change).
- The feed is one watch per kind across all namespaces (list+watch, bookmarks, resumed
  from a resourceVersion), kept to this hub's agent namespaces. 410 Gone is
  HistoryLostError: the dispatcher has every session resync. An object being deleted
  (deletionTimestamp set, finalizers pending) is deleted to Mooring. `delete_desired`
  also lifts the hub copy's finalizers: no Argo CD controller acts on the hub, and the
  cascade they ask for runs on the workload cluster, where the agent deletes the object.
- Revoked certificates: the ConfigMap `NAME-revocations` in the hub's own namespace
  `namespace` (default `default`), see `principal/_kuberevocations.py`.
- The mode check and a write are two calls (the Kubernetes API has no multi-object
  transaction): an agent registered as autonomous between them can get one
  hub-written object, which its agent refuses and the next resync reports.

The parts: principal/_kubemapping.py (labels, annotations, Resource <-> Argo CD object),
_kubeagents.py (the registry), _kubereads.py (lists, cursor, the change feed),
_kubewrites.py (desired objects, mirrors, status, deliveries), _kuberevocations.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from election import kubeobjects as kobj
from principal import _hub as hub
from principal import _kubeagents as kubeagents
from principal import _kubemapping as kubemap
from principal import _kubereads as kubereads
from principal import _kuberevocations as kuberevocations
from principal import _kubewrites as kubewrites

__all__ = ["KubeHubStore", "from_url"]


def from_url(url: str, *, timeout: float) -> KubeHubStore:
    query = kobj.parse_url(
        url,
        params=frozenset({"kubeconfig", "hub", "namespace-prefix", "namespace"}),
        what="hub store",
    )
    return KubeHubStore(
        kobj.KubeObjects.load(kubeconfig=query.get("kubeconfig"), timeout=timeout),
        hub=query.get("hub", "mooring"),
        namespace_prefix=query.get("namespace-prefix", ""),
        home=query.get("namespace", "default"),
    )


class KubeHubStore:
    """Agents as namespaces, desired state as Argo CD objects; see the module doc."""

    def __init__(
        self, client: kobj.KubeObjects, *, hub: str, namespace_prefix: str, home: str = "default"
    ) -> None:
        self.client = client
        self.hub = hub
        self.prefix = namespace_prefix
        self.agents = kubeagents.KubeAgents(client, hub_name=hub, prefix=namespace_prefix)
        self.reads = kubereads.KubeReads(client, agents=self.agents)
        self.writes = kubewrites.KubeWrites(client, agents=self.agents, reads=self.reads)
        self.revocations = kuberevocations.KubeRevocations(client, hub_name=hub, namespace=home)

    async def connect(self) -> None:
        await kubemap.call(self.client.list(kobj.NAMESPACES, label_selector=self.agents.selector))

    async def close(self) -> None:
        await self.client.close()

    # --- registry -----------------------------------------------------------------------
    def namespace(self, agent: str) -> str:
        return self.agents.namespace(agent)

    async def get_agent(self, name: str, *, cached: bool = False) -> hub.AgentRecord | None:
        return await self.agents.get_agent(name, cached=cached)

    async def list_agents(self) -> list[hub.AgentRecord]:
        return await self.agents.list_agents()

    async def register_agent(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord:
        return await self.agents.register_agent(name, mode=mode)

    async def set_agent_mode(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord | None:
        return await self.agents.set_agent_mode(name, mode=mode)

    async def delete_agent(self, name: str, *, cascade: bool = False) -> list[hub.Resource] | None:
        self.agents.namespace(kubemap.valid_agent(name))  # a bad name is an error, not "none"
        if await self.agents.get_agent(name) is None:
            return None
        resources, _ = await self.reads.list_resources(name)
        if resources and not cascade:
            raise hub.AgentInUseError(f"agent {name} has {len(resources)} resource(s) on the hub")
        for resource in resources:
            await self.writes.delete_lifting_finalizers(name, resource.kind, resource.name)
        if not await self.agents.unregister(name):
            return None  # unregistered meanwhile
        return resources

    def watch_agents(self) -> AsyncIterator[frozenset[str]]:
        return self.agents.watch_agents()

    # --- certificate revocation -----------------------------------------------------------
    async def revoke(
        self, *, serial: str = "", fingerprint: str = "", reason: str = "", agent: str = ""
    ) -> tuple[hub.Revocation, bool]:
        entry = hub.new_revocation(
            serial=serial, fingerprint=fingerprint, reason=reason, agent=agent
        )
        return await self.revocations.revoke(entry)

    async def list_revocations(self) -> list[hub.Revocation]:
        return await self.revocations.read()

    def watch_revocations(self) -> AsyncIterator[list[hub.Revocation]]:
        return self.revocations.watch()

    # --- resources ----------------------------------------------------------------------
    async def list_resources(self, agent: str) -> tuple[list[hub.Resource], hub.Cursor]:
        return await self.reads.list_resources(agent)

    async def get_resource(self, agent: str, kind: str, name: str) -> hub.Resource | None:
        return await self.reads.get_resource(agent, kind, name)

    async def apply_desired(self, agent: str, doc: Mapping[str, Any]) -> tuple[hub.Resource, bool]:
        return await self.writes.apply_desired(agent, doc)

    async def delete_desired(self, agent: str, kind: str, name: str) -> bool:
        return await self.writes.delete_desired(agent, kind, name)

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
        return await self.writes.mirror_upsert(
            agent, kind, name, obj=obj, version=version, status=status
        )

    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool:
        return await self.writes.mirror_delete(agent, kind, name, version=version)

    # --- status of managed resources ------------------------------------------------------
    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool:
        return await self.writes.put_status(
            agent, kind, name, status=status, spec_version=spec_version
        )

    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        await self.writes.record_refusal(agent, kind, name, message=message)

    async def list_status(self, agent: str) -> dict[tuple[str, str], dict[str, Any]]:
        return await self.reads.list_status(agent)

    # --- what agents acknowledged -------------------------------------------------------------
    async def put_deliveries(
        self, agent: str, deliveries: Mapping[tuple[str, str], hub.Delivery | None]
    ) -> None:
        await self.writes.put_deliveries(agent, deliveries)

    async def list_deliveries(self, agent: str) -> dict[tuple[str, str], hub.Delivery]:
        return await self.reads.list_deliveries(agent)

    # --- the change feed ----------------------------------------------------------------------
    async def cursor(self) -> hub.Cursor:
        return await self.reads.cursor()

    def watch_resources(self, *, after: hub.Cursor) -> AsyncIterator[hub.Change]:
        return self.reads.watch_resources(after=after)
