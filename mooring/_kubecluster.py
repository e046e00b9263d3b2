"""The `mooring up --kubernetes` variant: a real kube-apiserver instead of etcd alone.

kube-apiserver runs on its etcd 3.6 (recorded as the cluster's etcd), with Argo CD's
CRDs and the Lease namespace. The replicas' Leases and hub store are objects there (Argo
CD's Applications and AppProjects); each agent has a namespace on the hub and an Argo CD
namespace of its own as its store.
"""

from __future__ import annotations

from pathlib import Path

from mooring import _kubeapi as kubeapi
from mooring import _processes as processes
from mooring import _state as state_

__all__ = ["LEASE_NAMESPACE", "place_agent", "server", "start"]

LEASE_NAMESPACE = "mooring"
"""With --kubernetes: the namespace of the replicas' Leases."""


def server(directory: Path) -> kubeapi.KubeAPIServer:
    """The (not yet started) kube-apiserver of the cluster in `directory`, logging to
    logs/kube-apiserver.log."""
    apiserver, etcd36, crds = kubeapi.testbed_parts()
    kube = kubeapi.KubeAPIServer(
        directory / "kube", binary=apiserver, etcd_binary=etcd36, crds=crds
    )
    kube.log_path = directory / "logs" / "kube-apiserver.log"
    return kube


def start(kube: kubeapi.KubeAPIServer, state: state_.ClusterState) -> None:
    """Start kube-apiserver on its etcd 3.6 (recorded as the cluster's etcd), with Argo
    CD's CRDs and the Lease namespace; the replicas' hub store is Argo CD's objects there."""
    kube.start()
    member = kube.etcd.members[0].proc
    assert member is not None
    state.etcd[0].process = processes.Handle.of(member)
    kube.create_namespace(LEASE_NAMESPACE)
    state.kubernetes = state_.KubeRecord(
        hub_kubeconfig=str(kube.kubeconfig),
        workload_kubeconfig=str(kube.kubeconfig),
        namespace=LEASE_NAMESPACE,
        apiserver=state_.ServiceRecord(
            "kube-apiserver",
            f"{processes.HOST}:{kube.port}",
            str(kube.log_path),
            kube.handle,
        ),
    )
    state.store = f"kubernetes://?kubeconfig={kube.kubeconfig}"


def place_agent(
    kube: kubeapi.KubeAPIServer, kubernetes: state_.KubeRecord, record: state_.AgentRecord
) -> None:
    """Give agent `record` its namespace on the hub and its own Argo CD namespace,
    created now, as its store (instead of a local state file)."""
    record.state = ""
    record.namespace = record.name
    record.workload_namespace = f"argocd-{record.name}"
    kube.create_namespace(record.workload_namespace)
    record.store = (
        f"kubernetes://?kubeconfig={kubernetes.workload_kubeconfig}"
        f"&namespace={record.workload_namespace}"
    )
