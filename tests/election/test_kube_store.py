"""What is particular to the Kubernetes Lease store, on the test bed's real kube-apiserver.

Only the HTTP error-status matrix runs against the Lease test server
(`tests/kube_lease_server.py`): a real apiserver does not answer 429/500/502/503/504
on demand.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from election import _errors as errors
from election import _kube as kube
from mooring import _kubeapi as kubeapi
from tests import kube_lease_server
from tests._procs import free_port

NS = "mooring-test"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LEASE = {
    "holderIdentity": "replica-a",
    "leaseDurationSeconds": 15,
    "acquireTime": "2024-05-01T12:00:00.000000Z",
    "renewTime": "2024-05-01T12:00:05.000000Z",
    "leaseTransitions": 0,
}


@pytest.fixture
def namespace(kube_apiserver: kubeapi.KubeAPIServer) -> str:
    """A namespace of one test's own on the real apiserver."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_apiserver.create_namespace(name)
    return name


@pytest.fixture
async def store(
    kube_apiserver: kubeapi.KubeAPIServer, namespace: str
) -> AsyncIterator[kube.KubeLeaseStore]:
    made = kube.load_kube_store(
        namespace=namespace,
        kubeconfig=str(kube_apiserver.kubeconfig),
        prefix="/mooring/",
        timeout=5.0,
    )
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def admin(kube_apiserver: kubeapi.KubeAPIServer) -> Any:
    """The official client as the apiserver's admin, to look behind the store."""
    import kubernetes.config

    client = kubernetes.config.new_client_from_config(str(kube_apiserver.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def fault_store(
    kube_server: kube_lease_server.KubeLeaseServer,
) -> AsyncIterator[kube.KubeLeaseStore]:
    """A store on the Lease test server, whose answers a test chooses (`fail_status`)."""
    client = kube_lease_server.make_api_client(kube_server.url)
    made = kube.KubeLeaseStore(client, namespace=NS, prefix="/mooring/", timeout=1.0)
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        ("/mooring/leader", "mooring-leader"),
        ("/mooring/members/r1", "mooring-members-r1"),
        ("/mooring/members/principal-0", "mooring-members-principal-0"),
        ("shardmap", "shardmap"),
    ],
)
def test_lease_names_are_readable_when_the_mapping_is_faithful(full: str, expected: str) -> None:
    assert kube.lease_name(full) == expected


@pytest.mark.parametrize(
    "full",
    ["/mooring/members/Replica_A", "/mooring/members//r1", "/mooring/a.b", "x" * 300, "///"],
)
def test_lossy_lease_names_get_a_hash_suffix_and_stay_valid(full: str) -> None:
    name = kube.lease_name(full)
    assert name == kube.lease_name(full)  # deterministic
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, name
    assert re.search(r"[0-9a-f]{10}$", name), name


def test_lease_names_keep_distinct_records_apart() -> None:
    names = ["/m/members/r1", "/m/members/R1", "/m/members//r1", "/m/members/r_1", "/m/members/r.1"]
    assert len({kube.lease_name(full) for full in names}) == len(names)
    with pytest.raises(ValueError):
        kube.lease_name("")


async def test_records_are_stored_as_real_lease_objects(
    store: kube.KubeLeaseStore, admin: Any, namespace: str
) -> None:
    data = {**LEASE, "endpoint": "10.0.0.7:8443", "appliedEpoch": 4, "shardMap": {"a": [1]}}
    await store.create("members/r1", data)
    api = kubernetes.client.CoordinationV1Api(admin)
    raw = await asyncio.to_thread(
        api.read_namespaced_lease, "mooring-members-r1", namespace, _preload_content=False
    )
    lease = json.loads(raw.data)  # the apiserver's own JSON, times as it formats them
    assert lease["spec"] == {
        "holderIdentity": "replica-a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2024-05-01T12:00:00.000000Z",
        "renewTime": "2024-05-01T12:00:05.000000Z",
        "leaseTransitions": 0,
    }
    assert lease["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "mooring"}
    assert lease["metadata"]["annotations"] == {
        "mooring.io/endpoint": '"10.0.0.7:8443"',
        "mooring.io/appliedEpoch": "4",
        "mooring.io/shardMap": '{"a":[1]}',
        "store.mooring.io/name": "/mooring/members/r1",
    }


async def test_times_are_normalized_to_utc_micro_time(store: kube.KubeLeaseStore) -> None:
    created = await store.create(
        "leader", {**LEASE, "renewTime": "2024-05-01T14:00:05+02:00", "acquireTime": None}
    )
    assert created.data["renewTime"] == "2024-05-01T12:00:05.000000Z"
    assert "acquireTime" not in created.data


@pytest.mark.parametrize(
    "data",
    [
        {"holderIdentity": 7},
        {"leaseDurationSeconds": "15"},
        {"leaseTransitions": True},
        {"renewTime": "yesterday"},
        {"renewTime": "2024-05-01T12:00:05"},  # no zone
        {"bad key!": 1},
        {"endpoint": {1, 2}},
    ],
)
async def test_unmappable_data_is_refused_before_any_request(data: Any) -> None:
    # Nothing listens on the store's address: any request would be StoreUnavailableError.
    client = kube_lease_server.make_api_client(f"http://127.0.0.1:{free_port()}")
    store = kube.KubeLeaseStore(client, namespace=NS, prefix="/mooring/", timeout=1.0)
    try:
        with pytest.raises(ValueError):
            await store.create("leader", data)
    finally:
        await store.close()


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_retryable_http_statuses_are_unavailable(
    fault_store: kube.KubeLeaseStore, kube_server: kube_lease_server.KubeLeaseServer, status: int
) -> None:
    kube_server.fail_status = status
    with pytest.raises(errors.StoreUnavailableError, match=f"HTTP {status}"):
        await fault_store.get("leader")
    kube_server.fail_status = None
    assert await fault_store.get("leader") is None


@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_other_http_statuses_are_coordination_errors(
    fault_store: kube.KubeLeaseStore, kube_server: kube_lease_server.KubeLeaseServer, status: int
) -> None:
    kube_server.fail_status = status
    with pytest.raises(errors.CoordinationError, match=f"HTTP {status}") as caught:
        await fault_store.list()
    assert type(caught.value) is errors.CoordinationError


async def test_a_forbidden_request_is_a_coordination_error_naming_403(
    kube_apiserver: kubeapi.KubeAPIServer, namespace: str, tmp_path: Path
) -> None:
    # An authenticated user that RBAC grants nothing.
    nobody = kube_apiserver.identity("nobody", path=tmp_path / "nobody.kubeconfig")
    store = kube.load_kube_store(namespace=namespace, kubeconfig=str(nobody), timeout=5.0)
    try:
        with pytest.raises(errors.CoordinationError, match="HTTP 403") as caught:
            await store.list()
        assert type(caught.value) is errors.CoordinationError
        assert "\n" not in str(caught.value)
    finally:
        await store.close()


async def test_server_side_validation_surfaces_as_a_coordination_error(
    store: kube.KubeLeaseStore,
) -> None:
    with pytest.raises(errors.CoordinationError, match="must be greater than 0"):
        await store.create("leader", {**LEASE, "leaseDurationSeconds": 0})


async def test_a_refused_connection_is_unavailable_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store = kube.KubeLeaseStore(kube_lease_server.make_api_client(url), namespace=NS, timeout=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(errors.StoreUnavailableError):
        await store.get("leader")
    assert loop.time() - started < 2.0
    await store.close()


async def test_a_lease_holding_another_record_is_a_conflict_not_a_record(
    store: kube.KubeLeaseStore, admin: Any, namespace: str
) -> None:
    # "/mooring/members-r1" and "/mooring/members/r1" share a Lease name.
    await store.create("members-r1", LEASE)
    with pytest.raises(errors.ConflictError, match="holds record"):
        await store.get("members/r1")
    with pytest.raises(errors.ConflictError):
        await store.create("members/r1", LEASE)
    # A Lease nobody of ours wrote is neither read as a record nor listed.
    api = kubernetes.client.CoordinationV1Api(admin)
    foreign = kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name="mooring-foreign"),
        spec=kubernetes.client.V1LeaseSpec(holder_identity="someone"),
    )
    await asyncio.to_thread(api.create_namespaced_lease, namespace, foreign, _request_timeout=5)
    with pytest.raises(errors.ConflictError):
        await store.get("foreign")
    assert [record.name for record in await store.list()] == ["members-r1"]


async def test_load_kube_store_reads_a_kubeconfig(
    kube_apiserver: kubeapi.KubeAPIServer, namespace: str, admin: Any
) -> None:
    env = {"KUBECONFIG": str(kube_apiserver.kubeconfig)}
    store = kube.load_kube_store(namespace=namespace, env=env, timeout=5.0)
    try:
        created = await store.create("leader", LEASE)
        assert await store.get("leader") == created
        api = kubernetes.client.CoordinationV1Api(admin)
        leases = await asyncio.to_thread(api.list_namespaced_lease, namespace)
        assert [lease.metadata.name for lease in leases.items] == ["leader"]
    finally:
        await store.close()


def test_load_kube_store_without_configuration_is_one_readable_error(tmp_path: Path) -> None:
    with pytest.raises(errors.CoordinationError) as caught:
        kube.load_kube_store(namespace=NS, kubeconfig=str(tmp_path / "missing"))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("no usable Kubernetes configuration")
