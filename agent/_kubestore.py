"""The agent's local store on the workload cluster: Argo CD's own objects in its namespace.

URL: `kubernetes://[?kubeconfig=PATH][&namespace=NS]` (default namespace `argocd`;
without `kubeconfig`, $KUBECONFIG, then the in-cluster configuration).

- Managed agents write the principal's Applications and AppProjects into NS, each
  labelled `mooring.io/agent=<agent>` (how Mooring knows its own) and annotated
  `mooring.io/version` (the principal's version). An object of that name that Mooring
  did not create is never touched: applying over it is refused (LocalStoreError). A
  delete is a Kubernetes delete, so Argo CD's `resources-finalizer.argocd.argoproj.io`
  runs its cascade; the object counts as deleted from then on.
- Autonomous agents own every Application and AppProject in NS (Argo CD's or anyone's);
  their version is the object's resourceVersion, so a status change travels too. A
  deletion seen by the watch is kept as a tombstone until the principal acknowledges it.
- Bookkeeping (what the principal acknowledged) lives in one ConfigMap,
  `mooring-agent-<agent>` in NS: Mooring's marks stay apart from Argo CD's objects, so
  recording an acknowledgement never wakes Argo CD's reconciler, and no second database
  is needed. Labels and annotations under `mooring.io/` are Mooring's and never travel.
- `data_version` counts the watch's events on NS: Argo CD's status writes, kubectl edits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from agent._store import LocalResource, LocalStoreError, Mode
from election import errors as cerrors
from election import kubeobjects as kobj
from proto import codec, logfields, objects

__all__ = ["KubeLocalStore", "from_url"]

logger = logging.getLogger(__name__)

KINDS = kobj.ARGOCD
GROUP, VERSION = KINDS["Application"].group, KINDS["Application"].version
AGENT_LABEL = "mooring.io/agent"
VERSION_ANNOTATION = "mooring.io/version"
CHECKSUM_ANNOTATION = "mooring.io/checksum"  # of the object as the principal sent it
RETRIES = 8


def from_url(url: str, *, mode: Mode, agent: str, timeout: float) -> KubeLocalStore:
    query = kobj.parse_url(url, params=frozenset({"kubeconfig", "namespace"}), what="local store")
    return KubeLocalStore(
        kobj.KubeObjects.load(kubeconfig=query.get("kubeconfig"), timeout=timeout),
        namespace=objects.validate_agent_name(query.get("namespace", "argocd")),
        agent=agent,
        mode=mode,
    )


def _version(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0


class KubeLocalStore:
    """`LocalStore` on one namespace of the workload cluster; see the module doc."""

    def __init__(self, client: kobj.KubeObjects, *, namespace: str, agent: str, mode: Mode) -> None:
        self.client = client
        self.namespace = namespace
        self.agent = agent
        self.mode = mode
        self.bookkeeping = f"mooring-agent-{agent}"
        self._selector = f"{AGENT_LABEL}={agent}" if mode == "managed" else ""
        self._changes = 0
        self._watcher: asyncio.Task[None] | None = None
        self._tombstones: dict[tuple[str, str], int] = {}  # autonomous deletes not yet acked
        self._deleting: set[tuple[str, str]] = set()  # managed deletes Mooring itself made
        self._deleted_drift = ""  # a managed object deleted behind Mooring's back (watch)
        self._changed_drift = ""  # one changed behind Mooring's back, as the last rows() saw
        self._marks_cache: tuple[dict[str, dict[str, Any]], str | None] | None = None

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except cerrors.CoordinationError as err:
            raise LocalStoreError(str(err)) from err

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        await self.client.close()

    # --- bookkeeping ----------------------------------------------------------------------
    async def _marks(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        """The bookkeeping ConfigMap's entries and resourceVersion. Only this agent writes
        it, so it is read once and then kept as written; a conflict reads it again."""
        if self._marks_cache is None:
            found = await self._call(
                self.client.get(kobj.CONFIGMAPS, self.bookkeeping, namespace=self.namespace)
            )
            self._marks_cache = self._parse_marks(found)
        return self._marks_cache

    @staticmethod
    def _parse_marks(
        found: Mapping[str, Any] | None,
    ) -> tuple[dict[str, dict[str, Any]], str | None]:
        if found is None:
            return {}, None
        marks = {}
        for key, text in (found.get("data") or {}).items():
            with contextlib.suppress(ValueError):
                marks[key] = json.loads(text)
        return marks, str(found["metadata"]["resourceVersion"])

    async def _mark(self, kind: str, name: str, **values: Any) -> None:
        key = f"{kind}.{name}"
        for _ in range(RETRIES):
            marks, rv = await self._marks()
            entry = {**marks.get(key, {}), **values}
            try:
                if rv is None:
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": self.bookkeeping, "labels": {AGENT_LABEL: self.agent}},
                        "data": {key: json.dumps(entry)},
                    }
                    written = await self.client.create(
                        kobj.CONFIGMAPS, body, namespace=self.namespace
                    )
                else:
                    patch = {"metadata": {"resourceVersion": rv}, "data": {key: json.dumps(entry)}}
                    written = await self.client.patch(
                        kobj.CONFIGMAPS, self.bookkeeping, patch, namespace=self.namespace
                    )
                self._marks_cache = self._parse_marks(written)
                return
            except cerrors.ConflictError:
                self._marks_cache = None  # written elsewhere meanwhile: read it again
                continue
            except cerrors.CoordinationError as err:
                raise LocalStoreError(f"bookkeeping {self.bookkeeping}: {err}") from err
        raise LocalStoreError(f"bookkeeping {self.bookkeeping}: too much contention")

    # --- reads ------------------------------------------------------------------------------
    def _resource(
        self, kind: str, obj: Mapping[str, Any], marks: Mapping[str, Any]
    ) -> LocalResource:
        synced = objects.synced_object(obj)  # without Mooring's own mooring.io/ keys
        annotations = obj.get("metadata", {}).get("annotations") or {}
        if self.mode == "managed":
            version = _version(annotations.get(VERSION_ANNOTATION))
        else:
            version = _version(obj["metadata"].get("resourceVersion"))
        status = obj.get("status")
        mark = marks.get(f"{kind}.{obj['metadata']['name']}", {})
        return LocalResource(
            kind=kind,
            name=str(obj["metadata"]["name"]),
            object=synced,
            checksum=codec.checksum(synced),
            version=version,
            status=status,
            status_checksum=codec.checksum(status),
            status_synced=str(mark.get("status_synced", "")),
            synced_version=int(mark.get("synced_version", 0)),
            deleted=False,
        )

    async def rows(self, *, include_deleted: bool = False) -> list[LocalResource]:
        marks, _ = await self._marks()
        out = []
        changed = ""
        for kind_name, kind in KINDS.items():
            items, _ = await self._call(
                self.client.list(kind, namespace=self.namespace, label_selector=self._selector)
            )
            for item in items:
                if item.get("metadata", {}).get("deletionTimestamp"):
                    continue  # being deleted: finalizers pending, gone to Mooring
                row = self._resource(kind_name, item, marks)
                sent = (item["metadata"].get("annotations") or {}).get(CHECKSUM_ANNOTATION)
                if self.mode == "managed" and sent and row.checksum != sent and not changed:
                    changed = f"{kind_name} {row.name} was changed on the cluster"
                out.append(row)
        self._changed_drift = changed
        if include_deleted:
            for (kind_name, name), version in self._tombstones.items():
                if not any(r.kind == kind_name and r.name == name for r in out):
                    out.append(
                        LocalResource(kind_name, name, {}, "", version, None, "", "", 0, True)
                    )
        return sorted(out, key=lambda r: (r.kind, r.name))

    async def get(self, kind: str, name: str) -> LocalResource | None:
        found = await self._get(kind, name)
        if found is None or found.get("metadata", {}).get("deletionTimestamp"):
            return None
        if self.mode == "managed" and not self._ours(found):
            return None
        marks, _ = await self._marks()
        return self._resource(kind, found, marks)

    async def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        if kind not in KINDS:
            raise LocalStoreError(f"unsupported kind {kind!r}: expected Application or AppProject")
        found: dict[str, Any] | None = await self._call(
            self.client.get(KINDS[kind], name, namespace=self.namespace)
        )
        return found

    def _ours(self, obj: Mapping[str, Any]) -> bool:
        return (obj.get("metadata", {}).get("labels") or {}).get(AGENT_LABEL) == self.agent

    async def unsynced(self) -> list[LocalResource]:
        rows = await self.rows(include_deleted=True)
        if self.mode == "autonomous":
            return [r for r in rows if r.version > r.synced_version]
        return [r for r in rows if r.status is not None and r.status_checksum != r.status_synced]

    # --- managed: what the principal sends ----------------------------------------------------
    def _body(
        self, kind: str, name: str, obj: Mapping[str, Any], version: int, checksum: str
    ) -> dict[str, Any]:
        meta = dict(obj.get("metadata") or {})
        labels = {**(meta.get("labels") or {}), AGENT_LABEL: self.agent}
        annotations = {
            **(meta.get("annotations") or {}),
            VERSION_ANNOTATION: str(version),
            CHECKSUM_ANNOTATION: checksum,
        }
        body_meta: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
        if meta.get("finalizers"):
            body_meta["finalizers"] = list(meta["finalizers"])
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": body_meta,
            "spec": dict(obj.get("spec") or {}),
        }

    async def apply_remote_upsert(
        self,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        checksum: str,
        force: bool,
    ) -> bool:
        try:
            objects.validate_name(name, kind=kind)
        except objects.InvalidObjectError as err:
            raise LocalStoreError(str(err)) from err
        for _ in range(RETRIES):
            found = await self._get(kind, name)
            if found is not None and not self._ours(found):
                raise LocalStoreError(
                    f"{kind} {name} exists in namespace {self.namespace} and was not created by"
                    f" Mooring: it is left alone (delete or rename it to let agent {self.agent}"
                    " manage it)"
                )
            if found is not None and not found.get("metadata", {}).get("deletionTimestamp"):
                current = self._resource(kind, found, {})
                newer = version > current.version
                if not newer and not (force and checksum != current.checksum):
                    return False
                if current.checksum == checksum:
                    return False  # the same object again (the hub rewrote only its metadata)
            body = self._body(kind, name, obj, version, checksum)
            try:
                if found is None:
                    await self.client.create(KINDS[kind], body, namespace=self.namespace)
                else:
                    ops = kobj.replace_ops(found, body)
                    await self.client.patch(KINDS[kind], name, ops, namespace=self.namespace)
                return True
            except cerrors.ConflictError:
                continue  # created or changed meanwhile: look again
            except cerrors.CoordinationError as err:
                raise LocalStoreError(f"{kind} {name}: {err}") from err
        raise LocalStoreError(f"{kind} {name}: too much contention, try again")

    async def apply_remote_delete(self, kind: str, name: str, *, version: int, force: bool) -> bool:
        found = await self._get(kind, name)
        if found is None or not self._ours(found) or found["metadata"].get("deletionTimestamp"):
            return False
        current = self._resource(kind, found, {})
        if version < current.version and not force:
            return False
        self._deleting.add((kind, name))
        try:
            return await self.client.delete(
                KINDS[kind],
                name,
                namespace=self.namespace,
                resource_version=found["metadata"]["resourceVersion"],
            )
        except cerrors.ConflictError:
            return False  # changed meanwhile; the next event or resync decides
        except cerrors.CoordinationError as err:
            raise LocalStoreError(f"delete {kind} {name}: {err}") from err

    async def mark_status_synced(self, kind: str, name: str, status_checksum: str) -> None:
        await self._mark(kind, name, status_synced=status_checksum)

    # --- autonomous: what the principal acknowledged ------------------------------------------
    async def mark_synced(self, kind: str, name: str, version: int) -> None:
        tomb = self._tombstones.get((kind, name))
        if tomb is not None and version >= tomb:
            del self._tombstones[(kind, name)]
        await self._mark(kind, name, synced_version=version)

    async def drifted(self) -> str:
        """As the watch and the last `rows()` (or `unsynced()`) saw it: no request here."""
        if self._deleted_drift:
            drift, self._deleted_drift = self._deleted_drift, ""
            return drift
        return self._changed_drift

    # --- changes made by others -------------------------------------------------------------
    async def data_version(self) -> int:
        if self._watcher is None:
            ready = asyncio.Event()
            self._watcher = asyncio.create_task(
                self._watch(ready), name=f"kubestore-watch-{self.agent}"
            )
            await ready.wait()
        return self._changes

    async def _watch(self, ready: asyncio.Event) -> None:
        """Count every event on the namespace's Applications and AppProjects, re-listing
        after any break; deletions seen here become tombstones (autonomous)."""
        while True:
            try:
                streams = []
                for kind_name, kind in KINDS.items():
                    _, rv = await self.client.list(
                        kind, namespace=self.namespace, label_selector=self._selector
                    )
                    streams.append((kind_name, kind, rv))
                self._changes += 1  # a (re)list may have missed something: look
                ready.set()
                async with asyncio.TaskGroup() as group:
                    for kind_name, kind, rv in streams:
                        group.create_task(self._follow(kind_name, kind, rv))
            except* cerrors.CoordinationError as errs:
                ready.set()
                logger.warning(
                    "agent %s: local watch broke, re-listing: %s",
                    self.agent,
                    errs.exceptions[0],
                    extra=logfields.of(agent=self.agent, error=str(errs.exceptions[0])),
                )
                await asyncio.sleep(1.0)

    async def _follow(self, kind_name: str, kind: kobj.Kind, rv: str) -> None:
        async for event in self.client.watch(
            kind, resource_version=rv, label_selector=self._selector, namespace=self.namespace
        ):
            if event.type == "BOOKMARK":
                continue
            name = str(event.object.get("metadata", {}).get("name", ""))
            if event.type == "DELETED" and self.mode == "autonomous":
                self._tombstones[(kind_name, name)] = _version(event.resource_version)
            elif event.type == "DELETED" and (kind_name, name) in self._deleting:
                self._deleting.discard((kind_name, name))
            elif event.type == "DELETED" or event.object.get("metadata", {}).get(
                "deletionTimestamp"
            ):
                if (kind_name, name) not in self._deleting:
                    self._deleted_drift = f"{kind_name} {name} was deleted on the cluster"
            self._changes += 1
