"""A local cluster's state dir: DIR/cluster.json and the lock that guards it.

cluster.json is the one source of truth about a local cluster: every process
with its pid and start time, every port and endpoint, the coordination and
Redis URLs, and each log file. `up`, `scale`, `down` and `status` all read it
from disk, so they work across processes and after the `up` process crashed.
Writes are atomic (temporary file, then rename) and read-modify-write cycles
hold DIR/.lock (flock).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mooring import _errors as errors
from mooring import _processes as processes

__all__ = [
    "AgentRecord",
    "ClusterState",
    "FleetRecord",
    "KubeRecord",
    "ReplicaRecord",
    "ServiceRecord",
    "StateError",
    "load",
    "locked",
    "save",
    "state_path",
]

STATE_FILE = "cluster.json"
LOCK_FILE = ".lock"
TARGETS_FILE = "prometheus/targets.json"
"""Prometheus file_sd targets of the cluster's processes, rewritten with every save."""
PRINCIPAL_JOB = "mooring-principal"
AGENT_JOB = "mooring-agent"


class StateError(errors.MooringError, RuntimeError):
    """No cluster.json, or one that cannot be read."""


@dataclasses.dataclass
class ServiceRecord:
    name: str  # etcd0, redis
    endpoint: str  # HOST:PORT clients use
    log: str  # log file path
    process: processes.Handle | None = None


@dataclasses.dataclass
class ReplicaRecord:
    id: str  # replica id, p1..pN
    endpoint: str  # HOST:PORT agents dial
    metrics: str  # HOST:PORT of /metrics
    tls_dir: str
    log: str
    process: processes.Handle | None = None
    # The flags in force, by name (principal.flags.effective; secrets masked).
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class AgentRecord:
    name: str
    mode: str  # managed | autonomous
    state: str  # SQLite file of the agent's local store ("" with --kubernetes)
    tls_dir: str
    log: str | None = None  # own log file (--agent-processes only)
    metrics: str | None = None  # HOST:PORT of /metrics (--agent-processes only)
    process: processes.Handle | None = None  # own process (--agent-processes only)
    store: str | None = None  # the local store's URL when not the SQLite file (--kubernetes)
    namespace: str | None = None  # its namespace on the hub (--kubernetes)
    workload_namespace: str | None = None  # its Argo CD namespace (--kubernetes)
    # The settings in force, by flag name (agent.flags.effective), in a fleet too.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class KubeRecord:
    """`mooring up --kubernetes`: one real kube-apiserver for hub and workload clusters."""

    hub_kubeconfig: str
    workload_kubeconfig: str  # the same apiserver: one Argo CD namespace per agent
    namespace: str  # of the replicas' Leases
    apiserver: ServiceRecord


@dataclasses.dataclass
class FleetRecord:
    spec: str  # the fleet's spec file
    status_file: str  # JSON the fleet rewrites every second
    log: str
    process: processes.Handle | None = None


@dataclasses.dataclass
class ClusterState:
    dir: str
    coordination: str  # etcd://HOST:PORT[,HOST:PORT] or kubernetes (Leases)
    redis: str  # redis://HOST:PORT
    pki: str  # CA and certificates
    base_port: int | None = (
        None  # replica i listens on base_port+i, /metrics on base_port+100+i; None = free ports
    )
    supervisor: processes.Handle | None = None  # the foreground `mooring up`, if any
    etcd: list[ServiceRecord] = dataclasses.field(default_factory=list)
    redis_server: ServiceRecord | None = None
    replicas: list[ReplicaRecord] = dataclasses.field(default_factory=list)
    agents: list[AgentRecord] = dataclasses.field(default_factory=list)
    fleets: list[FleetRecord] = dataclasses.field(default_factory=list)  # in-process agents
    started: float = 0.0  # unix seconds
    store: str | None = None  # the hub store's URL when not the coordination etcd
    kubernetes: KubeRecord | None = None
    prometheus: ServiceRecord | None = None  # `mooring up --prometheus`
    # Processes placed in network namespaces (the chaos suite's partitions): name (etcd0,
    # redis, p1, fleet1, ...) -> {"namespace", "host"}; None: everything on loopback.
    netns: dict[str, dict[str, str]] | None = None
    # The etcd URL replicas dial when it is not `coordination` (the chaos suite's
    # latency proxy); None: `coordination`.
    replica_coordination: str | None = None

    def handles(self) -> list[processes.Handle | None]:
        """Every recorded process, in shutdown order (supervisor first, etcd last)."""
        out: list[processes.Handle | None] = [self.supervisor]
        out += [self.prometheus.process if self.prometheus else None]
        out += [f.process for f in self.fleets]
        out += [a.process for a in self.agents]
        out += [r.process for r in self.replicas]
        out += [self.kubernetes.apiserver.process if self.kubernetes else None]
        out += [self.redis_server.process if self.redis_server else None]
        out += [m.process for m in self.etcd]
        return out

    def running(self) -> list[int]:
        """Pids of recorded processes still alive."""
        return [h.pid for h in self.handles() if h is not None and processes.alive(h)]

    def to_json(self) -> dict[str, Any]:
        def conv(value: Any) -> Any:
            if isinstance(value, processes.Handle):
                return value.to_json()
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {f.name: conv(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, list):
                return [conv(v) for v in value]
            return value

        data: dict[str, Any] = conv(self)
        data["version"] = 1
        data["endpoints"] = [r.endpoint for r in self.replicas]
        data["logs"] = self.logs()
        return data

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus file_sd target groups: every replica (job mooring-principal) and every
        agent with its own metrics port (job mooring-agent), labelled with its name."""
        groups: list[dict[str, Any]] = [
            {"targets": [r.metrics], "labels": {"job": PRINCIPAL_JOB, "replica": r.id}}
            for r in self.replicas
        ]
        groups += [
            {"targets": [a.metrics], "labels": {"job": AGENT_JOB, "agent": a.name}}
            for a in self.agents
            if a.metrics
        ]
        return groups

    def logs(self) -> dict[str, str]:
        out = {m.name: m.log for m in self.etcd}
        if self.kubernetes:
            out["kube-apiserver"] = self.kubernetes.apiserver.log
        if self.redis_server:
            out["redis"] = self.redis_server.log
        out.update({r.id: r.log for r in self.replicas})
        for i, record in enumerate(self.fleets, start=1):
            out["fleet" if len(self.fleets) == 1 else f"fleet{i}"] = record.log
        out.update({a.name: a.log for a in self.agents if a.log})
        if self.prometheus:
            out["prometheus"] = self.prometheus.log
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        def handle(item: dict[str, Any]) -> processes.Handle | None:
            return processes.Handle.from_json(item.get("process"))

        def service(item: dict[str, Any]) -> ServiceRecord:
            return ServiceRecord(item["name"], item["endpoint"], item["log"], handle(item))

        redis_server = data.get("redis_server")
        prometheus = data.get("prometheus")
        kube = data.get("kubernetes")
        # version 1 files written before several fleets existed hold one "fleet"
        fleets = data.get("fleets") or ([data["fleet"]] if data.get("fleet") else [])
        return cls(
            dir=data["dir"],
            coordination=data["coordination"],
            redis=data["redis"],
            pki=data["pki"],
            base_port=data.get("base_port"),
            supervisor=processes.Handle.from_json(data.get("supervisor")),
            etcd=[service(m) for m in data.get("etcd", [])],
            redis_server=service(redis_server) if redis_server else None,
            replicas=[
                ReplicaRecord(
                    r["id"],
                    r["endpoint"],
                    r["metrics"],
                    r["tls_dir"],
                    r["log"],
                    handle(r),
                    r.get("settings") or {},
                )
                for r in data.get("replicas", [])
            ],
            agents=[
                AgentRecord(
                    a["name"],
                    a["mode"],
                    a["state"],
                    a["tls_dir"],
                    a.get("log"),
                    a.get("metrics"),
                    handle(a),
                    a.get("store"),
                    a.get("namespace"),
                    a.get("workload_namespace"),
                    a.get("settings") or {},
                )
                for a in data.get("agents", [])
            ],
            fleets=[FleetRecord(f["spec"], f["status_file"], f["log"], handle(f)) for f in fleets],
            started=float(data.get("started", 0.0)),
            store=data.get("store"),
            kubernetes=(
                KubeRecord(
                    kube["hub_kubeconfig"],
                    kube["workload_kubeconfig"],
                    kube["namespace"],
                    service(kube["apiserver"]),
                )
                if kube
                else None
            ),
            prometheus=service(prometheus) if prometheus else None,
            netns=data.get("netns"),
            replica_coordination=data.get("replica_coordination"),
        )


def state_path(directory: Path) -> Path:
    return Path(directory) / STATE_FILE


def load(directory: Path) -> ClusterState:
    path = state_path(directory)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StateError(
            f"no local cluster in {directory}: start one with `mooring up --dir {directory}`"
        ) from None
    except (OSError, ValueError) as err:
        raise StateError(f"cannot read {path}: {err}") from err
    try:
        return ClusterState.from_json(data)
    except (KeyError, TypeError) as err:
        raise StateError(f"{path} is not a mooring cluster state file (missing {err})") from err


def save(directory: Path, state: ClusterState) -> None:
    path = state_path(directory)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    targets = Path(directory) / TARGETS_FILE
    targets.parent.mkdir(parents=True, exist_ok=True)
    tmp = targets.with_name(f".{targets.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.targets(), indent=2) + "\n")
    os.replace(tmp, targets)  # Prometheus re-reads it on change: never half-written


PRIVATE_UMASK = 0o077
"""What a local cluster writes (certificates, logs, stores, history) only its user reads."""


_private = False


def private() -> None:
    """From now on this process and its children create files 0600 and folders 0700, and
    a state dir it locks is made 0700: called by every command that starts processes of
    a local cluster."""
    global _private
    os.umask(PRIVATE_UMASK)
    _private = True


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold DIR/.lock for a read-modify-write of cluster.json (blocks other writers); the
    state dir is made (or made again) private to this user."""
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    if _private and Path(directory).stat().st_mode & 0o077:  # made by an older mooring
        Path(directory).chmod(0o700)
    with (Path(directory) / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
