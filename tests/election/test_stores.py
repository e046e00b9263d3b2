"""open_store: one URL -> one working store, or a one-line ValueError."""

from __future__ import annotations

import asyncio
import uuid

import kubernetes.client
import kubernetes.config
import pytest

from election import _etcdrecords as etcdrecords
from election import _kube as kube
from election import _memory as memory
from election import _stores as stores
from mooring import _kubeapi as kubeapi
from mooring import _services as services


async def test_memory_url() -> None:
    store = stores.open_store("memory://", timeout=1.0)
    assert isinstance(store, memory.MemoryStore)
    created = await store.create("leader", {"holderIdentity": "a"})
    assert await store.get("leader") == created
    await store.close()


async def test_etcd_url_opens_a_working_store(etcd: services.EtcdCluster, prefix: str) -> None:
    store = stores.open_store(etcd.url, prefix=prefix + "/", timeout=2.0)
    assert isinstance(store, etcdrecords.EtcdRecordStore)
    try:
        created = await store.create("leader", {"holderIdentity": "a"})
        assert await store.get("leader") == created
        got = await store.kv.get((prefix + "/leader").encode())
        assert got is not None and str(got.mod_revision) == created.version
    finally:
        await store.close()


async def test_kubernetes_url_opens_a_working_store(kube_apiserver: kubeapi.KubeAPIServer) -> None:
    namespace = f"coord-{uuid.uuid4().hex[:8]}"
    kube_apiserver.create_namespace(namespace)
    store = stores.open_store(
        "kubernetes",
        timeout=5.0,
        namespace=namespace,
        env={"KUBECONFIG": str(kube_apiserver.kubeconfig)},
    )
    assert isinstance(store, kube.KubeLeaseStore)
    admin = kubernetes.config.new_client_from_config(str(kube_apiserver.kubeconfig))
    try:
        await store.create("members/r1", {"holderIdentity": "r1"})
        api = kubernetes.client.CoordinationV1Api(admin)
        leases = await asyncio.to_thread(api.list_namespaced_lease, namespace)
        assert [lease.metadata.name for lease in leases.items] == ["mooring-members-r1"]
    finally:
        await store.close()
        admin.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "etcd://",
        "etcd://host",
        "etcd://host:http",
        "etcd://host:70000",
        "redis://127.0.0.1:6379",
        "kubernetes://somewhere",
        "memory://x",
        "memory",
        "zookeeper",
    ],
)
def test_bad_urls_are_one_line_value_errors(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        stores.open_store(url, timeout=1.0)
    assert "\n" not in str(caught.value)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        stores.open_store("memory://", timeout=0)
