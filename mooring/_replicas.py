"""The principal replicas of a local cluster: their ports, certificates and processes.

Replica pN gets a certificate for its address, settings built as PrincipalSettings (its
command line and environment from them, the flags in force recorded in cluster.json),
and free ports, fixed ones (`--base-port`), or on a restart the ones it had, so that
the agents find it where they knew it.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import principal
from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_
from principal import pki

__all__ = [
    "METRICS_OFFSET",
    "PLACED_REPLICA_PORTS",
    "restart_replica",
    "start_replica",
    "startup",
]

METRICS_OFFSET = 100
"""With --base-port P, replica pN listens on P+N-1 and serves /metrics on P+100+N-1."""
PLACED_REPLICA_PORTS = (7443, 9100)
"""(agent port, metrics port) of a replica on an address of its own (a namespace)."""


def _port_free(port: int) -> bool:
    """Whether a server could listen on `port` now. Like gRPC, allow address reuse: a
    killed replica's connections in TIME_WAIT must not push its successor to a new port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((processes.HOST, port))
        except OSError:
            return False
        return True


def _replica_ports(state: state_.ClusterState, index: int) -> tuple[int, int]:
    """(agent port, metrics port) for replica p<index>: fixed, reused, or free."""
    if f"p{index}" in (state.netns or {}):
        return PLACED_REPLICA_PORTS
    if state.base_port is not None:
        return state.base_port + index - 1, state.base_port + METRICS_OFFSET + index - 1
    for record in state.replicas:
        if record.id == f"p{index}":  # restarting: keep the address the agents know
            port = int(record.endpoint.rpartition(":")[2])
            mport = int(record.metrics.rpartition(":")[2])
            if _port_free(port) and _port_free(mport):
                return port, mport
    return services.free_port(processes.HOST), services.free_port(processes.HOST)


def start_replica(
    state: state_.ClusterState, index: int
) -> tuple[state_.ReplicaRecord, subprocess.Popen[bytes]]:
    """Start replica p<index> of `state` (not yet waiting for it); the caller records it."""
    replica_id = f"p{index}"
    port, mport = _replica_ports(state, index)
    prefix, host = processes.placed(state.netns, replica_id)
    logs = Path(state.dir) / "logs"
    sans = list(dict.fromkeys([host, processes.HOST, "localhost"]))
    tls_dir = pki.issue_principal(Path(state.pki), name=replica_id, sans=sans)
    record = state_.ReplicaRecord(
        id=replica_id,
        endpoint=f"{host}:{port}",
        metrics=f"{host}:{mport}",
        tls_dir=str(tls_dir),
        log=str(logs / f"{replica_id}.log"),
    )
    settings = principal.settings.PrincipalSettings(
        replica_id=replica_id,
        listen=record.endpoint,
        advertise=record.endpoint,
        coordination=state.replica_coordination or state.coordination,
        namespace=state.kubernetes.namespace if state.kubernetes is not None else "default",
        store=state.store or None,
        tls_dir=Path(record.tls_dir),
        metrics=record.metrics,
        # Its URL carries the password: in the environment (to_env), which only this user
        # reads, not on the command line, which anyone's `ps` shows.
        redis=state.redis or None,
        history=Path(state.dir) / "history" / f"{replica_id}.jsonl",
    )
    record.settings = principal.flags.effective(settings)  # for tools: no /proc parsing
    env = principal.flags.to_env(settings)
    if state.kubernetes is not None:
        env["KUBECONFIG"] = state.kubernetes.hub_kubeconfig
    proc, record.process = processes.spawn_mooring(
        ["principal", "serve", *principal.flags.to_argv(settings)],
        log=Path(record.log),
        env=env,
        prefix=prefix,
    )
    return record, proc


def startup(record: state_.ReplicaRecord, proc: subprocess.Popen[bytes]) -> processes.Started:
    """What `processes.wait_ready` waits for: the replica listening on its endpoint."""
    return (f"replica {record.id}", proc, Path(record.log), record.endpoint)


def restart_replica(state: state_.ClusterState, replica_id: str) -> state_.ReplicaRecord:
    """Start replica `replica_id` of `state` again (same ports when free) and wait until
    it listens; `state` is updated, the caller saves it (`mooring start pN`)."""
    fresh, proc = start_replica(state, int(replica_id[1:]))
    state.replicas = [fresh if r.id == replica_id else r for r in state.replicas]
    processes.wait_ready([startup(fresh, proc)])
    return fresh
