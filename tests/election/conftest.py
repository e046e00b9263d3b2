"""Fixtures for the coordination stores: one harness per adapter, each on its real backend.

The Lease test server (`kube_server`) is only for faults a real apiserver cannot
produce on demand (chosen HTTP error statuses, counted requests).
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from election import _etcd as etcd
from election import _etcdrecords as etcdrecords
from election import _kube as kube
from election import _memory as memory
from election import _stores as stores
from mooring import _kubeapi as kubeapi
from mooring import _processes as processes
from mooring import _services as services
from tests import kube_lease_server
from tests.election.store_harness import StoreHarness

STORE_KINDS = ["memory", "etcd", "etcd36", "etcd3", "kubernetes"]
NAMESPACE = "mooring-test"


@pytest.fixture
def kube_server() -> Iterator[kube_lease_server.KubeLeaseServer]:
    """The Lease API test server on a free loopback port."""
    with kube_lease_server.KubeLeaseServer() as server:
        yield server


def _stop_etcd(cluster: services.EtcdCluster, stopped: bool) -> None:
    for member in cluster.members:
        if member.proc is not None and member.proc.poll() is None:
            processes.stop_signal(member.proc.pid, signal.SIGSTOP if stopped else signal.SIGCONT)
    if not stopped:
        cluster.wait_healthy(timeout=10)


def _etcd_harness(kind: str, cluster: services.EtcdCluster, prefix: str) -> StoreHarness:
    def open_via(timeout: float, endpoints: Sequence[str]) -> stores.FencedRecordStore:
        kv = etcd.EtcdKV(endpoints, timeout=timeout)
        return etcdrecords.EtcdRecordStore(kv, prefix=prefix + "/")

    return StoreHarness(
        kind,
        opener=lambda timeout: open_via(timeout, cluster.endpoints),
        hang=lambda stopped: _stop_etcd(cluster, stopped),
        targets=cluster.endpoints,
        open_via=open_via,
    )


def _kube_harness(server: kubeapi.KubeAPIServer, prefix: str) -> StoreHarness:
    """Lease stores on the real apiserver; `hanging()` SIGSTOPs the apiserver itself."""
    server.create_namespace(NAMESPACE)

    def open_kube_via(timeout: float, addresses: Sequence[str]) -> stores.FencedRecordStore:
        store = kube.load_kube_store(
            namespace=NAMESPACE,
            kubeconfig=str(server.kubeconfig),
            prefix=prefix + "/",
            timeout=timeout,
        )
        store.api_client.configuration.host = f"https://{addresses[0]}"
        return store

    def hang_kube(value: bool) -> None:
        if value:
            server.pause()
        else:
            server.resume()

    target = f"{server.host}:{server.port}"
    return StoreHarness(
        "kubernetes",
        opener=lambda timeout: open_kube_via(timeout, [target]),
        hang=hang_kube,
        targets=[target],
        open_via=open_kube_via,
    )


@pytest.fixture(scope="module")
def etcd3_shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[services.EtcdCluster]:
    """A real 3-member etcd shared by one module's tests (isolated by `prefix`).

    Tests that kill members take the root conftest's fresh `etcd3` instead.
    """
    cluster = services.EtcdCluster(tmp_path_factory.mktemp("etcd3-shared"), members=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=STORE_KINDS)
async def harness(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[StoreHarness]:
    """One harness per adapter: memory, etcd 3.4 (1 member), etcd 3.6 (1 member), etcd 3.4
    (3 members), Kubernetes Leases on the test bed's kube-apiserver.

    Each test gets its own key prefix (etcd) or Lease-name prefix (Kubernetes).
    """
    kind: str = request.param
    if kind == "memory":
        backend = memory.MemoryBackend()
        views: list[memory.MemoryStore] = []

        def open_memory(timeout: float) -> stores.FencedRecordStore:
            views.append(memory.MemoryStore(timeout=timeout, backend=backend))
            return views[-1]

        def hang_memory(value: bool) -> None:
            for view in views:
                view.hang = value

        made = StoreHarness(kind, opener=open_memory, hang=hang_memory)
    elif kind == "etcd":
        made = _etcd_harness(kind, request.getfixturevalue("etcd"), prefix)
    elif kind == "etcd3":
        # A test that asks for `etcd3` itself (to kill members) gets a fresh cluster.
        wanted = "etcd3" if "etcd3" in request.fixturenames else "etcd3_shared"
        made = _etcd_harness(kind, request.getfixturevalue(wanted), prefix)
    elif kind == "etcd36":
        made = _etcd_harness(kind, request.getfixturevalue("etcd36"), prefix)
    else:
        made = _kube_harness(request.getfixturevalue("kube_apiserver"), prefix)
    try:
        yield made
    finally:
        await made.aclose()
