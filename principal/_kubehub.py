"""The hub store on Kubernetes (`principal._hub.HubStore`): Argo CD's own custom resources.

URL: `kubernetes://[?kubeconfig=PATH][&hub=NAME][&namespace-prefix=PREFIX]`; without
`kubeconfig`, $KUBECONFIG, then the in-cluster configuration.

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
- The mode check and a write are two calls (the Kubernetes API has no multi-object
  transaction): an agent registered as autonomous between them can get one
  hub-written object, which its agent refuses and the next resync reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from election import _errors as cerrors
from election import _kubeobjects as kobj
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
)
from proto import codec, objects

__all__ = ["KubeHubStore", "from_url"]

KINDS = kobj.ARGOCD
GROUP, VERSION = KINDS["Application"].group, KINDS["Application"].version
HUB_LABEL = "mooring.io/hub"
AGENT_LABEL = "mooring.io/agent"
MODE_LABEL = "mooring.io/mode"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ORIGIN = "mooring.io/origin"
AGENT_VERSION = "mooring.io/agent-version"
STATUS_SPEC_VERSION = "mooring.io/status-spec-version"
AGENT_CHECKSUM = "mooring.io/agent-checksum"  # of a mirror as its agent sent it
NEGATIVE_TTL = 2.0  # seconds a namespace found not to be an agent's is not asked again
RETRIES = 8  # compare-and-swap attempts before "too much contention"


def from_url(url: str, *, timeout: float) -> KubeHubStore:
    query = kobj.parse_url(
        url, params=frozenset({"kubeconfig", "hub", "namespace-prefix"}), what="hub store"
    )
    return KubeHubStore(
        kobj.KubeObjects.load(kubeconfig=query.get("kubeconfig"), timeout=timeout),
        hub=query.get("hub", "mooring"),
        namespace_prefix=query.get("namespace-prefix", ""),
    )


def _valid_agent(name: str) -> str:
    try:
        return objects.validate_agent_name(name)
    except objects.InvalidObjectError as err:
        raise hub.StoreError(str(err)) from err


def _cursor(resource_version: str) -> Cursor:
    try:
        return Cursor(int(resource_version))
    except ValueError:
        raise hub.StoreError(
            f"resourceVersion {resource_version[:40]!r} is not an integer: this apiserver's"
            " storage is not supported by the Kubernetes hub store"
        ) from None


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


class KubeHubStore:
    """Agents as namespaces, desired state as Argo CD objects; see the module doc."""

    def __init__(self, client: kobj.KubeObjects, *, hub: str, namespace_prefix: str) -> None:
        self.client = client
        self.hub = hub
        self.prefix = namespace_prefix
        self._selector = f"{HUB_LABEL}={hub},{AGENT_LABEL}"
        self._registered: dict[str, Mode] = {}
        self._not_agents: dict[str, float] = {}  # namespace -> monotonic time of the answer
        self._deleting: set[tuple[str, str, str]] = set()  # (namespace, kind, name) of mirrors

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except cerrors.CoordinationError as err:
            raise hub.StoreError(str(err)) from err

    async def connect(self) -> None:
        await self._call(self.client.list(kobj.NAMESPACES, label_selector=self._selector))

    async def close(self) -> None:
        await self.client.close()

    # --- registry -----------------------------------------------------------------------
    def namespace(self, agent: str) -> str:
        namespace = self.prefix + objects.validate_agent_name(agent)
        try:
            return objects.validate_agent_name(namespace)
        except objects.InvalidObjectError as err:
            raise hub.StoreError(f"agent {agent}: namespace {namespace[:80]!r} is invalid") from err

    def _agent_of(self, namespace: Mapping[str, Any]) -> AgentRecord | None:
        labels = namespace.get("metadata", {}).get("labels") or {}
        if labels.get(HUB_LABEL) != self.hub or AGENT_LABEL not in labels:
            return None
        mode = labels.get(MODE_LABEL, "managed")
        return AgentRecord(labels[AGENT_LABEL], mode if mode in MODES else "managed")

    async def get_agent(self, name: str) -> AgentRecord | None:
        try:
            namespace = self.namespace(name)
        except (hub.StoreError, objects.InvalidObjectError):
            return None
        found = await self._call(self.client.get(kobj.NAMESPACES, namespace))
        return None if found is None else self._agent_of(found)

    async def list_agents(self) -> list[AgentRecord]:
        items, _ = await self._call(
            self.client.list(kobj.NAMESPACES, label_selector=self._selector)
        )
        found = [a for a in (self._agent_of(item) for item in items) if a is not None]
        return sorted(found, key=lambda a: a.name)

    async def register_agent(self, name: str, *, mode: Mode) -> AgentRecord:
        if mode not in MODES:
            raise hub.StoreError(f"unknown mode {mode!r}: expected managed or autonomous")
        try:
            namespace = self.namespace(name)
        except objects.InvalidObjectError as err:
            raise hub.StoreError(str(err)) from err
        if self._registered.get(name) == mode:
            return AgentRecord(name, mode)
        labels = {
            HUB_LABEL: self.hub,
            AGENT_LABEL: name,
            MODE_LABEL: mode,
            MANAGED_BY_LABEL: "mooring",
        }
        for _ in range(RETRIES):
            found = await self._call(self.client.get(kobj.NAMESPACES, namespace))
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
            if existing.get(HUB_LABEL, self.hub) != self.hub:
                raise hub.StoreError(
                    f"namespace {namespace} belongs to Mooring hub {existing[HUB_LABEL]!r}"
                )
            record = self._agent_of(found)
            if record is not None:
                if record.mode != mode:
                    raise ModeConflictError(
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
        return AgentRecord(name, mode)

    async def _relabel(
        self, name: str, labels: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    ) -> AgentRecord | None:
        """Merge-patch the agent's namespace with `labels(namespace)` (None: nothing to do),
        compared on its resourceVersion; the record before the patch, None if no agent."""
        namespace = self.namespace(name)
        for _ in range(RETRIES):
            found = await self._call(self.client.get(kobj.NAMESPACES, namespace))
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

    async def set_agent_mode(self, name: str, *, mode: Mode) -> AgentRecord | None:
        if mode not in MODES:
            raise hub.StoreError(f"unknown mode {mode!r}: expected managed or autonomous")

        def labels(namespace: Mapping[str, Any]) -> dict[str, Any] | None:
            current = (namespace.get("metadata", {}).get("labels") or {}).get(MODE_LABEL)
            return None if current == mode else {MODE_LABEL: mode}

        if await self._relabel(_valid_agent(name), labels) is None:
            return None
        self._registered[name] = mode
        return AgentRecord(name, mode)

    async def delete_agent(self, name: str, *, cascade: bool = False) -> list[Resource] | None:
        namespace = self.namespace(_valid_agent(name))
        if await self.get_agent(name) is None:
            return None
        resources, _ = await self.list_resources(name)
        if resources and not cascade:
            raise AgentInUseError(f"agent {name} has {len(resources)} resource(s) on the hub")
        for resource in resources:
            await self._delete_lifting_finalizers(name, resource.kind, resource.name)

        def labels(found: Mapping[str, Any]) -> dict[str, Any]:
            mine = {HUB_LABEL: None, AGENT_LABEL: None, MODE_LABEL: None}
            current = found.get("metadata", {}).get("labels") or {}
            if current.get(MANAGED_BY_LABEL) == "mooring":
                mine[MANAGED_BY_LABEL] = None
            return mine

        if await self._relabel(name, labels) is None:
            return None  # unregistered meanwhile
        self._registered.pop(name, None)
        self._not_agents.pop(namespace, None)
        return resources

    async def watch_agents(self) -> AsyncIterator[frozenset[str]]:
        items, rv = await self._call(
            self.client.list(kobj.NAMESPACES, label_selector=self._selector)
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
                kobj.NAMESPACES, resource_version=rv, label_selector=self._selector
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

    # --- resources ----------------------------------------------------------------------
    def _resource(self, agent: str, obj: Mapping[str, Any]) -> Resource:
        annotations = _annotations(obj)
        synced = objects.synced_object(obj)  # without Mooring's own mooring.io/ keys
        origin = "agent" if annotations.get(ORIGIN) == "agent" else "principal"
        status = obj.get("status")
        rv = _cursor(str(obj["metadata"]["resourceVersion"]))
        version = int(annotations.get(AGENT_VERSION, "0")) if origin == "agent" else rv
        checksum = codec.checksum(synced)
        sent = annotations.get(AGENT_CHECKSUM)
        return Resource(
            agent=agent,
            kind=str(obj["kind"]),
            name=str(obj["metadata"]["name"]),
            object=synced,
            checksum=checksum,
            version=version,
            status=status if origin == "agent" else None,
            status_checksum=codec.checksum(status) if origin == "agent" else "",
            origin=origin,
            drifted=origin == "agent" and sent is not None and sent != checksum,
        )

    async def list_resources(self, agent: str) -> tuple[list[Resource], Cursor]:
        namespace = self.namespace(agent)
        out: list[Resource] = []
        cursors: list[Cursor] = []
        for kind_name, kind in KINDS.items():
            items, rv = await self._call(self.client.list(kind, namespace=namespace))
            cursors.append(_cursor(rv))
            for item in items:
                item.setdefault("kind", kind_name)
                if not item.get("metadata", {}).get("deletionTimestamp"):
                    out.append(self._resource(agent, item))
        # The earlier list's position: a change between the two lists is delivered again
        # by the feed rather than lost.
        return sorted(out, key=lambda r: (r.kind, r.name)), min(cursors)

    async def _get(self, agent: str, kind: str, name: str) -> dict[str, Any] | None:
        if kind not in KINDS:
            raise hub.StoreError(f"unsupported kind {kind!r}: expected Application or AppProject")
        found: dict[str, Any] | None = await self._call(
            self.client.get(KINDS[kind], name, namespace=self.namespace(agent))
        )
        if found is not None:
            found.setdefault("kind", kind)
        return found

    async def get_resource(self, agent: str, kind: str, name: str) -> Resource | None:
        found = await self._get(agent, kind, name)
        if found is None or found.get("metadata", {}).get("deletionTimestamp"):
            return None
        return self._resource(agent, found)

    def _body(
        self, agent: str, kind: str, name: str, synced: Mapping[str, Any], extra: Mapping[str, str]
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace(agent)}
        meta.update(synced.get("metadata") or {})
        if extra:
            meta["annotations"] = {**(meta.get("annotations") or {}), **extra}
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": meta,
            "spec": synced.get("spec") or {},
        }

    async def _write(
        self,
        agent: str,
        kind: str,
        name: str,
        body: dict[str, Any],
        current: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Create (current None) or replace the synced part of `current` by a patch that
        compares its resourceVersion; None when the compare failed (read again)."""
        namespace = self.namespace(agent)
        try:
            if current is None:
                created = await self.client.create(KINDS[kind], body, namespace=namespace)
                created.setdefault("kind", kind)
                return created
            ops = kobj.replace_ops(current, body)
            patched = await self.client.patch(KINDS[kind], name, ops, namespace=namespace)
            patched.setdefault("kind", kind)
            return patched
        except cerrors.ConflictError:
            return None
        except cerrors.CoordinationError as err:
            raise hub.StoreError(f"{kind} {name} for agent {agent}: {err}") from err

    async def _mode(self, agent: str) -> Mode | None:
        # One read per agent and process (it saves one apiserver request per apply_desired);
        # a replica's watch_agents keeps the cache current when a mode changes elsewhere.
        if agent in self._registered:
            return self._registered[agent]
        record = await self.get_agent(agent)
        if record is None:
            return None
        self._registered[agent] = record.mode
        return record.mode

    async def apply_desired(self, agent: str, doc: Mapping[str, Any]) -> tuple[Resource, bool]:
        try:
            objects.validate_agent_name(agent)
            kind, name = objects.validate_manifest(doc)
        except objects.InvalidObjectError as err:
            raise hub.StoreError(str(err)) from err
        mode = await self._mode(agent)
        if mode == "autonomous":
            raise ModeConflictError(
                f"agent {agent} is autonomous: {kind} {name} is owned by the agent and "
                "cannot be changed from the principal; change it on the agent"
            )
        if mode is None:
            await self.register_agent(agent, mode="managed")
        synced = objects.synced_object(doc)
        digest = codec.checksum(synced)
        for _ in range(RETRIES):
            current = await self._get(agent, kind, name)
            extra: dict[str, str] = {}
            if current is not None:
                resource = self._resource(agent, current)
                if resource.origin == "agent":
                    raise ModeConflictError(f"{kind} {name} of agent {agent} is the agent's own")
                if resource.checksum == digest:
                    return resource, False
                if STATUS_SPEC_VERSION in _annotations(current):
                    extra[STATUS_SPEC_VERSION] = _annotations(current)[STATUS_SPEC_VERSION]
            written = await self._write(
                agent, kind, name, self._body(agent, kind, name, synced, extra), current
            )
            if written is not None:
                return self._resource(agent, written), True
        raise hub.StoreError(f"{kind} {name} for agent {agent}: too much contention, try again")

    async def delete_desired(self, agent: str, kind: str, name: str) -> bool:
        if await self._mode(agent) == "autonomous":
            raise ModeConflictError(
                f"agent {agent} is autonomous: {kind} {name} cannot be deleted from the principal"
            )
        return await self._delete_lifting_finalizers(agent, kind, name)

    async def _delete_lifting_finalizers(self, agent: str, kind: str, name: str) -> bool:
        current = await self._get(agent, kind, name)
        if current is None or current.get("metadata", {}).get("deletionTimestamp"):
            return False  # gone, or already being deleted (finalizers pending)
        namespace = self.namespace(agent)
        deleted = bool(await self._call(self.client.delete(KINDS[kind], name, namespace=namespace)))
        if deleted and current.get("metadata", {}).get("finalizers"):
            # No Argo CD controller acts on the hub's copies: their finalizers (Argo CD's
            # cascade) belong on the workload cluster, where the agent deletes the object
            # and Argo CD runs them. On the hub they would hold the object forever.
            with contextlib.suppress(cerrors.CoordinationError):
                await self.client.patch(
                    KINDS[kind], name, [{"op": "remove", "path": "/metadata/finalizers"}],
                    namespace=namespace,
                )  # fmt: skip
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
    ) -> bool:
        digest, status_digest = codec.checksum(obj), codec.checksum(status)
        for _ in range(RETRIES):
            current = await self._get(agent, kind, name)
            if current is not None:
                resource = self._resource(agent, current)
                if resource.origin == "agent" and (
                    resource.version > version
                    or (resource.checksum == digest and resource.status_checksum == status_digest)
                ):
                    return False
            body = self._body(
                agent,
                kind,
                name,
                obj,
                {ORIGIN: "agent", AGENT_VERSION: str(version), AGENT_CHECKSUM: digest},
            )
            if status is not None:
                body["status"] = dict(status)
            if await self._write(agent, kind, name, body, current) is not None:
                return True
        raise hub.StoreError(f"mirror {kind} {name} of agent {agent}: too much contention")

    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool:
        current = await self._get(agent, kind, name)
        if current is None:
            return False
        if self._resource(agent, current).version > version:
            return False
        self._deleting.add((self.namespace(agent), kind, name))
        try:
            return await self.client.delete(
                KINDS[kind],
                name,
                namespace=self.namespace(agent),
                resource_version=current["metadata"]["resourceVersion"],
            )
        except cerrors.ConflictError:
            return False  # changed meanwhile: the agent's next event decides
        except cerrors.CoordinationError as err:
            raise hub.StoreError(f"mirror delete {kind} {name} of agent {agent}: {err}") from err

    # --- status of managed resources ------------------------------------------------------
    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool:
        digest = codec.checksum(status)

        def ops(current: Mapping[str, Any]) -> list[dict[str, Any]] | None:
            if codec.checksum(current.get("status")) == digest:
                return None
            annotations = {**_annotations(current), STATUS_SPEC_VERSION: str(spec_version)}
            return [
                {"op": "add", "path": "/status", "value": dict(status)},
                {"op": "add", "path": "/metadata/annotations", "value": annotations},
            ]

        return await self._patch_status(agent, kind, name, ops, what="status")

    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        if kind != "Application":
            return  # an AppProject's status has no conditions

        def ops(current: Mapping[str, Any]) -> list[dict[str, Any]]:
            status = hub.refusal_conditions(current.get("status"), message)
            return [{"op": "add", "path": "/status", "value": status}]

        await self._patch_status(agent, kind, name, ops, what="condition")

    async def _patch_status(
        self,
        agent: str,
        kind: str,
        name: str,
        ops: Callable[[Mapping[str, Any]], list[dict[str, Any]] | None],
        *,
        what: str,
    ) -> bool:
        """Patch the object with `ops(current)` (None: nothing to do) if it is unchanged
        meanwhile, reading it again on a conflict; False when it is gone or nothing to do."""
        where = f"{what} of {kind} {name} for agent {agent}"
        for _ in range(RETRIES):
            current = await self._get(agent, kind, name)
            planned = None if current is None else ops(current)
            if current is None or planned is None:
                return False  # deleted meanwhile, or already so
            patch = kobj.if_unchanged(current, planned)
            try:
                await self.client.patch(KINDS[kind], name, patch, namespace=self.namespace(agent))
                return True
            except cerrors.ConflictError:
                continue
            except cerrors.CoordinationError as err:
                raise hub.StoreError(f"{where}: {err}") from err
        raise hub.StoreError(f"{where}: too much contention")

    async def list_status(self, agent: str) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        namespace = self.namespace(agent)
        for kind_name, kind in KINDS.items():
            items, _ = await self._call(self.client.list(kind, namespace=namespace))
            for item in items:
                annotations = _annotations(item)
                status = item.get("status")
                if annotations.get(ORIGIN) == "agent" or not status:
                    continue
                out[(kind_name, item["metadata"]["name"])] = {
                    "status": status,
                    "status_checksum": codec.checksum(status),
                    "spec_version": int(annotations.get(STATUS_SPEC_VERSION, "0")),
                }
        return out

    # --- the change feed ----------------------------------------------------------------------
    async def cursor(self) -> Cursor:
        cursors = []
        for kind in KINDS.values():
            _, rv = await self._call(self.client.list(kind, label_selector="mooring.io/none-such"))
            cursors.append(_cursor(rv))
        return min(cursors)

    async def _agent_of_namespace(self, namespace: str) -> str | None:
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

    async def watch_resources(self, *, after: Cursor) -> AsyncIterator[Change]:
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
                position = _cursor(event.resource_version)
                positions[kind_name] = max(positions[kind_name], position)
                if event.type == "BOOKMARK":
                    continue
                meta = event.object.get("metadata", {})
                namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
                agent = await self._agent_of_namespace(namespace)
                if agent is None:
                    continue
                key = (namespace, kind_name, name)
                cursor = min(positions.values())
                if event.type == "DELETED" or meta.get("deletionTimestamp"):
                    if seen.get(key) == "deleted":
                        continue
                    seen[key] = "deleted"
                    mirror = (meta.get("annotations") or {}).get(ORIGIN) == "agent"
                    foreign = mirror and key not in self._deleting
                    self._deleting.discard(key)
                    yield Change(
                        agent, kind_name, name, True, None, position, position, cursor, foreign
                    )
                    continue
                event.object.setdefault("kind", kind_name)
                resource = self._resource(agent, event.object)
                fingerprint = f"{resource.checksum}:{resource.status_checksum}"
                if seen.get(key) == fingerprint:
                    continue  # a write that left the synced part as it was (a status report)
                seen[key] = fingerprint
                yield Change(
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
