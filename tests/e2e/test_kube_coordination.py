"""Principal replicas coordinating on Kubernetes Lease objects of a real kube-apiserver.

Two `mooring principal serve --coordination kubernetes` processes elect a leader and
publish a shard map through the official client against the test bed's apiserver,
keep desired state on etcd (`--store`), and serve a real agent. (Three replicas with
SIGKILL and SIGSTOP of the leader on real Leases: tests/e2e/test_leader.py.)
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest

from mooring import _kubeapi as kubeapi
from tests import _procs as procs
from tests._poll import wait_for
from tests._procs import mooring

pytestmark = pytest.mark.e2e


@pytest.fixture
def kube(kube_apiserver: kubeapi.KubeAPIServer) -> Iterator[tuple[str, Path, Any]]:
    """A namespace of this test's own, the admin kubeconfig, and a Lease API client."""
    namespace = f"coord-{uuid.uuid4().hex[:8]}"
    kube_apiserver.create_namespace(namespace)
    client = kubernetes.config.new_client_from_config(str(kube_apiserver.kubeconfig))
    try:
        yield namespace, kube_apiserver.kubeconfig, kubernetes.client.CoordinationV1Api(client)
    finally:
        client.close()


def leader_of(metrics_ports: dict[str, int]) -> list[str]:
    leaders = []
    for rid, port in metrics_ports.items():
        samples = procs.scrape(port)
        if samples is not None and samples.value("mooring_leader") == 1.0:
            leaders.append(rid)
    return leaders


def sample(port: int, name: str) -> float:
    """The sum of `name`'s series on PORT (0 if it has none, -1 if PORT does not answer)."""
    samples = procs.scrape(port)
    return -1.0 if samples is None else samples.sum(name) or 0.0


def test_replicas_coordinate_on_kubernetes_leases(kube, etcd, tmp_path: Path) -> None:
    namespace, kubeconfig, leases = kube
    root = f"/k-{uuid.uuid4().hex[:8]}/"
    pki = tmp_path / "pki"
    mooring("pki", "init", "--dir", str(pki))
    env = {"KUBECONFIG": str(kubeconfig)}
    replicas: dict[str, procs.Proc] = {}
    ports: dict[str, int] = {}
    endpoints = []
    for rid in ("k1", "k2"):
        mooring("pki", "issue", "principal", "--dir", str(pki), "--name", rid, "--san", "127.0.0.1")
        ports[rid] = procs.free_port()
        settings = procs.replica_settings(
            rid,
            coordination="kubernetes",
            namespace=namespace,
            store=etcd.url,
            store_root=root,
            tls_dir=pki / "principals" / rid,
            metrics=f"127.0.0.1:{ports[rid]}",
            auto_register=True,  # edge-k registers by connecting
        )
        replicas[rid] = procs.replica(settings, log=tmp_path / f"{rid}.log", env=env).start()
        endpoints.append(settings.listen)
    mooring("pki", "issue", "agent", "--dir", str(pki), "--name", "edge-k")
    agent_metrics = procs.free_port()
    agent = procs.Proc(
        [
            "agent",
            "run",
            "--name",
            "edge-k",
            "--mode",
            "managed",
            "--endpoints",
            ",".join(endpoints),
            "--tls-dir",
            str(pki / "agents" / "edge-k"),
            "--state",
            str(tmp_path / "edge-k.db"),
            "--metrics",
            f"127.0.0.1:{agent_metrics}",
        ],
        log=tmp_path / "agent.log",
    ).start()
    try:
        first = wait_for(lambda: leader_of(ports), timeout=20, what="a leader on Kubernetes Leases")
        assert len(first) == 1

        # The leader publishes the shard map right after it takes the lease.
        def published() -> set[str] | None:
            got = {lease.metadata.name for lease in leases.list_namespaced_lease(namespace).items}
            return got if any(n.endswith("shardmap") for n in got) else None

        names = wait_for(published, timeout=10, what="the shard map as a Lease")
        assert any(n.endswith("leader") for n in names), names
        assert any("members" in n for n in names), names
        wait_for(
            lambda: sample(agent_metrics, "mooring_agent_connected") == 1.0,
            timeout=20,
            what="agent connected",
        )

        on_victim = sample(ports[first[0]], "mooring_sessions_open") == 1.0
        sessions_before = sample(agent_metrics, "mooring_sessions_total")
        replicas[first[0]].kill(signal.SIGKILL)
        survivor = next(r for r in replicas if r != first[0])
        wait_for(
            lambda: leader_of({survivor: ports[survivor]}) == [survivor],
            timeout=15,
            what="takeover",
        )
        # The only live replica must now be serving the agent.
        wait_for(
            lambda: (
                sample(ports[survivor], "mooring_sessions_open") == 1.0
                and sample(agent_metrics, "mooring_agent_connected") == 1.0
            ),
            timeout=20,
            what="the agent served by the surviving replica",
        )
        sessions_after = sample(agent_metrics, "mooring_sessions_total")
        assert sessions_after == sessions_before + (1 if on_victim else 0)
    finally:
        agent.stop()
        for proc in replicas.values():
            proc.stop()
