"""The services under a local cluster's replicas: etcd (1 or 3 members, with users and
passwords; or kube-apiserver and its etcd with --kubernetes) and a password-protected
Redis, each a real process from PATH (or the test bed), placed in a network namespace
when the chaos suite asks."""

from __future__ import annotations

import dataclasses
import secrets
import urllib.parse
from pathlib import Path

from mooring import _kubeapi as kubeapi
from mooring import _kubecluster as kubecluster
from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_

__all__ = ["Backends", "prepare", "require", "start"]


@dataclasses.dataclass(frozen=True)
class Backends:
    """A cluster's etcd and Redis, built (their ports chosen) but not yet started."""

    etcd: services.EtcdCluster  # with --kubernetes, kube-apiserver's own
    redis: services.RedisServer
    kube: kubeapi.KubeAPIServer | None  # with --kubernetes
    etcd_auth: services.EtcdAuth | None  # the replicas' etcd user (None: kube-apiserver's etcd)

    @property
    def coordination(self) -> str:
        """What the replicas coordinate on: the etcd URL, or "kubernetes" (Leases)."""
        if self.kube is not None:
            return "kubernetes"
        if self.etcd_auth is not None:
            return self.etcd_auth.url(self.etcd.url)
        return self.etcd.url

    def through(self, via: str | None) -> str | None:
        """The etcd URL `via` (e.g. a proxy in front of etcd) with this cluster's options
        (its user and password file, its CA): what replicas dial instead of etcd itself."""
        if via is None:
            return None
        options = urllib.parse.urlsplit(self.coordination).query
        return via.partition("?")[0] + (f"?{options}" if options else "")


def require(*, kubernetes: bool) -> None:
    """Before touching anything: a one-line error naming what to build (the test bed)
    or which package to install when a binary is missing."""
    if kubernetes:
        kubeapi.testbed_parts()
    else:
        services.require_binary("etcd")
    services.require_binary("redis-server")


def prepare(
    directory: Path,
    *,
    etcd_members: int,
    kubernetes: bool,
    netns: dict[str, dict[str, str]] | None,
) -> Backends:
    """Build the services of the cluster in `directory` (their data and logs there)."""
    logs = directory / "logs"
    kube: kubeapi.KubeAPIServer | None = None
    etcd_auth: services.EtcdAuth | None = None
    if kubernetes:
        kube = kubecluster.server(directory)
        etcd_cluster = kube.etcd
    else:
        etcd_cluster = services.EtcdCluster(
            directory / "etcd",
            members=etcd_members,
            placement=[processes.placed(netns, f"etcd{i}") for i in range(etcd_members)]
            if netns
            else None,
        )
        etcd_auth = services.EtcdAuth(directory / "etcd")  # a local cluster's etcd wants a login
    for member in etcd_cluster.members:
        member.log_path = logs / f"{member.name}.log"
    redis_prefix, redis_host = processes.placed(netns, "redis")
    redis = services.RedisServer(
        directory / "redis",
        host=redis_host,
        prefix=redis_prefix,
        port=services.PLACED_PORTS["redis"] if redis_prefix else None,
        password=secrets.token_urlsafe(24),  # a local cluster's Redis wants a password too
    )
    redis.log_path = logs / "redis.log"
    return Backends(etcd=etcd_cluster, redis=redis, kube=kube, etcd_auth=etcd_auth)


def start(backends: Backends, state: state_.ClusterState, directory: Path) -> None:
    """Start etcd (or kube-apiserver) and Redis, recording each process in `state` and
    saving cluster.json as it goes (so that `down` finds them), and wait until etcd is
    healthy."""
    etcd_cluster, redis = backends.etcd, backends.redis
    state.etcd = [
        state_.ServiceRecord(m.name, m.endpoint, str(m.log_path)) for m in etcd_cluster.members
    ]
    state.redis_server = state_.ServiceRecord(
        "redis", f"{redis.host}:{redis.port}", str(redis.log_path)
    )
    if backends.kube is not None:
        kubecluster.start(backends.kube, state)
    else:
        for i in range(len(etcd_cluster.members)):
            etcd_cluster.start_member(i)
            proc = etcd_cluster.members[i].proc
            assert proc is not None
            state.etcd[i].process = processes.Handle.of(proc)
    state_.save(directory, state)
    redis.start()
    assert redis.proc is not None
    state.redis_server.process = processes.Handle.of(redis.proc)
    state_.save(directory, state)
    for member in etcd_cluster.members:
        services.wait_tcp(member.host, member.client_port, timeout=processes.READY_TIMEOUT)
    etcd_cluster.wait_healthy(timeout=processes.READY_TIMEOUT)
    if backends.etcd_auth is not None:
        etcd_cluster.enable_auth(backends.etcd_auth)
