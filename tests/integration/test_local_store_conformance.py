"""One conformance suite for the agent's local stores (`agent._localstore.LocalStore`).

Each test runs on SQLite and on the workload cluster's Argo CD namespace on the test bed's
real kube-apiserver. `Side` plays what is not Mooring on that side: Argo CD writing status,
a user creating or deleting objects (on SQLite: `mooring app apply --agent-state` does).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
from kubernetes.client.exceptions import ApiException

from agent import _kubestore as kubestore
from agent import _localstore as localstore
from agent import _store as agent_store
from election import _kubeobjects as kobj
from mooring import _kubeapi as kubeapi
from proto import codec, objects
from tests import _argocd as argocd
from tests._poll import eventually

pytestmark = pytest.mark.integration

GROUP, VERSION = "argoproj.io", "v1alpha1"
PLURALS = {"Application": "applications", "AppProject": "appprojects"}


app = argocd.application


class Side:
    """Opens stores of one backend and acts on it as Argo CD or a user would."""

    def __init__(self, kind: str, root: Path, apiserver: kubeapi.KubeAPIServer | None) -> None:
        self.kind = kind
        self.root = root
        self.apiserver = apiserver
        self.namespace = f"argocd-{uuid.uuid4().hex[:8]}"
        self.opened: list[localstore.LocalStore] = []
        self.others: list[agent_store.AgentStore] = []
        self.api: Any = None
        if apiserver is not None:
            apiserver.create_namespace(self.namespace)
            self.client = kubernetes.config.new_client_from_config(str(apiserver.kubeconfig))
            self.api = kubernetes.client.CustomObjectsApi(self.client)

    def open(self, mode: str, *, agent: str = "edge-1") -> localstore.LocalStore:
        if self.apiserver is None:
            store = localstore.open_local_store(
                f"sqlite:///{self.root / (agent + '.db')}", mode=mode, agent=agent
            )
        else:
            store = localstore.open_local_store(
                f"kubernetes://?kubeconfig={self.apiserver.kubeconfig}&namespace={self.namespace}",
                mode=mode,
                agent=agent,
            )
        self.opened.append(store)
        return store

    def _other(self, store: localstore.LocalStore) -> agent_store.AgentStore:
        """A second connection to the SQLite file, as `mooring app apply --agent-state`."""
        assert isinstance(store, localstore.SqliteLocalStore)
        other = agent_store.AgentStore(store.sync.path, create=False)
        self.others.append(other)
        return other

    async def set_status(
        self, store: localstore.LocalStore, kind: str, name: str, status: dict
    ) -> None:
        if self.api is None:
            self._other(store).apply_local(
                {"kind": kind, "metadata": {"name": name}, "status": status}
            )
        else:
            await asyncio.to_thread(
                self.api.patch_namespaced_custom_object,
                GROUP, VERSION, self.namespace, PLURALS[kind], name, {"status": status},
                _content_type="application/merge-patch+json",
            )  # fmt: skip

    async def create(self, store: localstore.LocalStore, doc: dict) -> None:
        if self.api is None:
            self._other(store).apply_local(doc)
        else:
            await asyncio.to_thread(
                self.api.create_namespaced_custom_object,
                GROUP, VERSION, self.namespace, PLURALS[doc["kind"]], doc,
            )  # fmt: skip

    async def update(self, store: localstore.LocalStore, doc: dict) -> None:
        if self.api is None:
            await self.create(store, doc)
        else:
            await asyncio.to_thread(
                self.api.patch_namespaced_custom_object,
                GROUP, VERSION, self.namespace, PLURALS[doc["kind"]], doc["metadata"]["name"],
                {"spec": doc["spec"]}, _content_type="application/merge-patch+json",
            )  # fmt: skip

    async def delete(self, store: localstore.LocalStore, kind: str, name: str) -> None:
        if self.api is None:
            self._other(store).delete_local(kind, name)
        else:
            await asyncio.to_thread(
                self.api.delete_namespaced_custom_object,
                GROUP, VERSION, self.namespace, PLURALS[kind], name,
            )  # fmt: skip

    async def close(self) -> None:
        for other in self.others:
            other.close()
        for store in self.opened:
            await store.close()
        if self.api is not None:
            self.client.close()


@pytest.fixture(params=["sqlite", "kubernetes"])
async def side(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Side]:
    apiserver = request.getfixturevalue("kube_apiserver") if request.param == "kubernetes" else None
    made = Side(request.param, tmp_path, apiserver)
    try:
        yield made
    finally:
        await made.close()


def synced(doc: dict) -> dict:
    return objects.synced_object(doc)


# --- managed ---------------------------------------------------------------------------------


async def test_managed_upserts_are_idempotent_by_version(side: Side) -> None:
    store = side.open("managed")
    doc = app(
        "guestbook", labels={"team": "web"}, finalizers=["resources-finalizer.argocd.argoproj.io"]
    )
    obj, digest = synced(doc), codec.checksum(synced(doc))
    assert await store.apply_remote_upsert(
        "Application", "guestbook", obj=obj, version=5, checksum=digest, force=False
    )
    assert not await store.apply_remote_upsert(
        "Application", "guestbook", obj=obj, version=5, checksum=digest, force=False
    )
    # The same object at a higher version (the hub wrote only Mooring's annotations on
    # it, which bumps a Kubernetes resourceVersion) changes nothing.
    assert not await store.apply_remote_upsert(
        "Application", "guestbook", obj=obj, version=7, checksum=digest, force=False
    )
    older = synced(app("guestbook", path="old"))
    assert not await store.apply_remote_upsert(
        "Application",
        "guestbook",
        obj=older,
        version=4,
        checksum=codec.checksum(older),
        force=False,
    )
    got = await store.get("Application", "guestbook")
    assert got is not None and (got.version, got.object, got.checksum) == (5, obj, digest)
    # A resync may bring an older version that differs: it wins then.
    assert await store.apply_remote_upsert(
        "Application", "guestbook", obj=older, version=4, checksum=codec.checksum(older), force=True
    )
    newer = synced(app("guestbook", path="v2"))
    assert await store.apply_remote_upsert(
        "Application",
        "guestbook",
        obj=newer,
        version=9,
        checksum=codec.checksum(newer),
        force=False,
    )
    rows = await store.rows()
    assert [(r.name, r.version, r.object) for r in rows] == [("guestbook", 9, newer)]


async def test_managed_deletes_honour_versions(side: Side) -> None:
    store = side.open("managed")
    obj = synced(app("guestbook"))
    await store.apply_remote_upsert(
        "Application", "guestbook", obj=obj, version=5, checksum=codec.checksum(obj), force=False
    )
    assert not await store.apply_remote_delete("Application", "guestbook", version=3, force=False)
    assert await store.apply_remote_delete("Application", "guestbook", version=6, force=False)
    assert await store.get("Application", "guestbook") is None
    assert not await store.apply_remote_delete("Application", "guestbook", version=7, force=False)


async def test_status_argo_cd_reports_is_unsynced_until_marked(side: Side) -> None:
    store = side.open("managed")
    obj = synced(app("guestbook"))
    await store.apply_remote_upsert(
        "Application", "guestbook", obj=obj, version=5, checksum=codec.checksum(obj), force=False
    )
    before = await store.data_version()
    status = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
    await side.set_status(store, "Application", "guestbook", status)

    await eventually(
        store.data_version, until=lambda now: now != before, what="the data version to move"
    )
    pending = await store.unsynced()
    assert [(r.name, r.status) for r in pending] == [("guestbook", status)]
    await store.mark_status_synced("Application", "guestbook", pending[0].status_checksum)
    assert await store.unsynced() == []
    row = await store.get("Application", "guestbook")
    assert row is not None and row.version == 5 and row.object == obj  # status is no spec change


# --- autonomous ----------------------------------------------------------------------------


async def test_autonomous_objects_are_unsynced_until_acknowledged(side: Side) -> None:
    store = side.open("autonomous", agent="edge-a")
    await store.data_version()  # the agent watches from its start
    await side.create(store, app("own"))
    rows = await eventually(store.unsynced, what="an unsynced row")
    assert [(r.name, r.object) for r in rows] == [("own", synced(app("own")))]
    first = rows[0].version
    await store.mark_synced("Application", "own", first)
    assert await store.unsynced() == []
    await side.update(store, app("own", path="v2"))
    rows = await eventually(store.unsynced, what="an unsynced row")
    assert rows[0].version > first and rows[0].object == synced(app("own", path="v2"))


async def test_autonomous_deletions_are_tombstones_until_acknowledged(side: Side) -> None:
    store = side.open("autonomous", agent="edge-a")
    await store.data_version()
    await side.create(store, app("gone"))
    rows = await eventually(store.unsynced, what="an unsynced row")
    await store.mark_synced("Application", "gone", rows[0].version)
    await side.delete(store, "Application", "gone")

    async def tombstone() -> list:
        return [r for r in await store.rows(include_deleted=True) if r.deleted]

    tombs = await eventually(tombstone, what="a tombstone")
    assert [(t.name, t.deleted) for t in tombs] == [("gone", True)]
    assert tombs[0].version > rows[0].version
    assert [r.name for r in await store.unsynced()] == ["gone"]
    await store.mark_synced("Application", "gone", tombs[0].version)
    assert await store.rows(include_deleted=True) == []


# --- the workload cluster only ---------------------------------------------------------------


@pytest.fixture
async def kube_side(kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path) -> AsyncIterator[Side]:
    made = Side("kubernetes", tmp_path, kube_apiserver)
    try:
        yield made
    finally:
        await made.close()


async def test_an_object_mooring_did_not_create_is_left_alone(kube_side: Side) -> None:
    store = kube_side.open("managed")
    theirs = app("theirs", path="by-hand")
    await kube_side.create(store, theirs)
    obj = synced(app("theirs"))
    with pytest.raises(localstore.LocalStoreError, match="was not created by Mooring") as refused:
        await store.apply_remote_upsert(
            "Application", "theirs", obj=obj, version=5, checksum=codec.checksum(obj), force=True
        )
    assert "\n" not in str(refused.value)
    assert not await store.apply_remote_delete("Application", "theirs", version=99, force=True)
    assert await store.rows() == []  # and it is not listed as Mooring's
    found = await asyncio.to_thread(
        kube_side.api.get_namespaced_custom_object,
        GROUP, VERSION, kube_side.namespace, "applications", "theirs",
    )  # fmt: skip
    assert found["spec"]["source"]["path"] == "by-hand"


async def test_what_the_crd_schema_refuses_is_one_line(kube_side: Side) -> None:
    store = kube_side.open("managed")
    bad = app("retries")
    bad["spec"]["syncPolicy"] = {"retry": {"limit": "many"}}
    obj = synced(bad)
    with pytest.raises(localstore.LocalStoreError, match=r"spec.syncPolicy.retry.limit") as refused:
        await store.apply_remote_upsert(
            "Application", "retries", obj=obj, version=1, checksum=codec.checksum(obj), force=False
        )
    assert "\n" not in str(refused.value)


async def test_a_service_account_without_rights_gets_one_line(
    kube_apiserver: kubeapi.KubeAPIServer, kube_side: Side, tmp_path: Path
) -> None:
    nobody = kube_apiserver.identity(f"agent-{kube_side.namespace}", path=tmp_path / "nobody")
    store = kubestore.KubeLocalStore(
        kobj.KubeObjects.load(kubeconfig=str(nobody), timeout=5.0),
        namespace=kube_side.namespace,
        agent="edge-1",
        mode="managed",
    )
    try:
        obj = synced(app("guestbook"))
        with pytest.raises(localstore.LocalStoreError, match="HTTP 403") as refused:
            await store.apply_remote_upsert(
                "Application",
                "guestbook",
                obj=obj,
                version=1,
                checksum=codec.checksum(obj),
                force=False,
            )
        assert "\n" not in str(refused.value)
    finally:
        await store.close()
    with pytest.raises(ApiException):  # nothing was written
        await asyncio.to_thread(
            kube_side.api.get_namespaced_custom_object,
            GROUP, VERSION, kube_side.namespace, "applications", "guestbook",
        )  # fmt: skip
