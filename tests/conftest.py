"""Shared fixtures: real etcd (Debian's 3.4 and the test bed's 3.6), Redis and
kube-apiserver processes on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mooring import _kubeapi as kubeapi
from mooring import _services as services
from tests import _testbed as testbed

pytest_plugins = ["tests._tiers"]  # tiers by folder, leaked tasks, loop time


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.EtcdCluster]:
    """One real single-member etcd shared by the session; use `prefix` to isolate tests."""
    cluster = services.EtcdCluster(tmp_path_factory.mktemp("etcd"), members=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[services.EtcdCluster]:
    """A fresh real 3-member etcd cluster for one test (members may be killed)."""
    cluster = services.EtcdCluster(tmp_path / "etcd3", members=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisServer]:
    server = services.RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to one test, so tests can share one etcd."""
    return f"/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def etcd36(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.EtcdCluster]:
    """One real single-member etcd 3.6 (built by the test bed) shared by the session."""
    testbed.require("etcd")
    cluster = services.EtcdCluster(
        tmp_path_factory.mktemp("etcd36"), members=1, binary=str(testbed.binary("etcd"))
    ).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubeapi.KubeAPIServer]:
    """One real kube-apiserver on its own etcd 3.6, with Argo CD's, prometheus-operator's
    and cert-manager's CRDs, for the session.

    Tests isolate themselves by namespace or name prefix; `kubeconfig` is the admin's.
    """
    testbed.require(
        "kube-apiserver", "etcd", crds=True, crd_sets=("prometheus-operator", "cert-manager")
    )
    server = kubeapi.KubeAPIServer(
        tmp_path_factory.mktemp("kube"),
        binary=str(testbed.binary("kube-apiserver")),
        etcd_binary=str(testbed.binary("etcd")),
        # Every CRD a test or a chart references, installed once before any test runs.
        crds=testbed.argocd_crds() + testbed.monitoring_crds() + testbed.cert_manager_crds(),
    ).start()
    try:
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs on the test bed's kube-apiserver `kubernetes`."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "kube_apiserver" in getattr(item, "fixturenames", ()) or "kubernetes" in params.values():
            item.add_marker(pytest.mark.kubernetes)
