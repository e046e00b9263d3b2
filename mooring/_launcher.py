"""The local cluster: `mooring up`, `mooring scale`, `mooring down`.

`up` starts real etcd (1 or 3 members) and Redis from PATH, issues every
certificate, starts N `mooring principal serve` processes and M agents (one
fleet process hosting them all, or one `mooring agent run` process each), seeds
a few sample Applications, and records everything in DIR/cluster.json. In the
foreground it shows a live status table until Ctrl-C or SIGTERM, then stops
everything; with `detach` it returns once the cluster is up.

`scale` and `down` work from cluster.json alone, so they also work after the
`up` process has crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import principal
from agent import _store as agent_store
from mooring import _fleet as fleet
from mooring import _kubeapi as kubeapi
from mooring import _monitoring as monitoring
from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_
from mooring import _status as status_
from principal import _pki as pki

__all__ = [
    "UpOptions",
    "agent_mode",
    "down",
    "restart_replica",
    "scale",
    "seed_autonomous",
    "seed_managed",
    "up",
]

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
"""Seconds for every replica to listen and the fleet to report after `up` or `scale`."""
STOP_GRACE = 10.0
"""Seconds a process has between SIGTERM and SIGKILL."""
SUPERVISOR_GRACE = 40.0
"""Seconds a foreground `mooring up` has to stop its cluster when `down` asks it to."""
AUTONOMOUS_EVERY = 4
"""Every 4th agent (edge-04, edge-08, ...) is autonomous, the rest managed."""
METRICS_OFFSET = 100
"""With --base-port P, replica pN listens on P+N-1 and serves /metrics on P+100+N-1."""
LEASE_NAMESPACE = "mooring"
"""With --kubernetes: the namespace of the replicas' Leases."""
AGENTS_TIMEOUT = 30.0
"""Seconds `up --detach` waits for every agent's first session."""
REFRESH_TTY = 1.0
REFRESH_PLAIN = 5.0
"""Seconds between status tables: in place on a terminal, appended otherwise."""


@dataclasses.dataclass(frozen=True)
class UpOptions:
    directory: Path  # the state dir (cluster.json, pki/, logs/, data)
    replicas: int = 3  # principal replicas
    agents: int = 20  # agents
    etcd_members: int = 1  # 1 or 3
    agent_processes: bool = False  # one `mooring agent run` process per agent
    fleets: int = 1  # fleet processes sharing the agents (without agent_processes)
    base_port: int | None = None  # fixed replica ports instead of free ones
    detach: bool = False  # return once the cluster is up
    kubernetes: bool = False  # Leases, the hub store and the agents on a real kube-apiserver
    prometheus: bool = False  # a real Prometheus scraping everything, with the alert rules
    prometheus_port: int | None = None  # its HTTP port (default: a free one)
    alert_for_scale: float = 1.0  # every alert rule's `for:` times this (local demos: 0.1)
    # Run processes in network namespaces (the chaos suite): name (etcd0, redis, p1,
    # fleet1, ...) -> {"namespace", "host"}; the caller must run in a namespace that
    # reaches those hosts. Not a CLI flag.
    netns: dict[str, dict[str, str]] | None = None
    # The etcd URL the replicas dial instead of the cluster's (a proxy in between).
    replica_coordination: str | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {self.replicas}")
        if self.agents < 0:
            raise ValueError(f"--agents must not be negative, got {self.agents}")
        if self.fleets < 1:
            raise ValueError(f"--fleets must be at least 1, got {self.fleets}")
        if self.etcd_members not in (1, 3):
            raise ValueError(f"--etcd-members must be 1 or 3, got {self.etcd_members}")
        if self.alert_for_scale <= 0:
            raise ValueError(f"--alert-for-scale must be positive, got {self.alert_for_scale}")
        if self.base_port is not None and not 1024 <= self.base_port <= 65535 - 2 * METRICS_OFFSET:
            raise ValueError(f"--base-port {self.base_port} is out of range (1024-65335)")


def agent_name(index: int) -> str:
    return f"edge-{index:02d}"


def agent_mode(index: int) -> str:
    return "autonomous" if index % AUTONOMOUS_EVERY == 0 else "managed"


def sample_app(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://github.com/argoproj/argocd-example-apps.git",
                "path": "guestbook",
                "targetRevision": "HEAD",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }


# ----------------------------------------------------------------------------- signals
class _Signals:
    """SIGINT/SIGTERM: abort startup at once (KeyboardInterrupt), later just set a flag."""

    def __init__(self) -> None:
        self.stop = False
        self.starting = True
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True
        if self.starting:
            self.starting = False  # raise once; the cleanup itself is not interrupted
            raise KeyboardInterrupt

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- helpers
def _port_free(port: int) -> bool:
    """Whether a server could listen on `port` now. Like gRPC, allow address reuse: a
    killed replica's connections in TIME_WAIT must not push its successor to a new port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


PLACED_REPLICA_PORTS = (7443, 9100)
"""(agent port, metrics port) of a replica on an address of its own (a namespace)."""


def _placed(netns: dict[str, dict[str, str]] | None, name: str) -> tuple[tuple[str, ...], str]:
    """(argv prefix, host) of process `name`: its namespace's, or none and loopback."""
    where = (netns or {}).get(name)
    if where is None:
        return (), HOST
    return ("ip", "netns", "exec", where["namespace"]), where["host"]


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
    return services.free_port(HOST), services.free_port(HOST)


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:200]
    return "no output"


def _listening(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def _start_replica(
    state: state_.ClusterState, index: int
) -> tuple[state_.ReplicaRecord, subprocess.Popen[bytes]]:
    replica_id = f"p{index}"
    port, mport = _replica_ports(state, index)
    prefix, host = _placed(state.netns, replica_id)
    logs = Path(state.dir) / "logs"
    sans = list(dict.fromkeys([host, HOST, "localhost"]))
    tls_dir = pki.issue_principal(Path(state.pki), name=replica_id, sans=sans)
    record = state_.ReplicaRecord(
        id=replica_id,
        endpoint=f"{host}:{port}",
        metrics=f"{host}:{mport}",
        tls_dir=str(tls_dir),
        log=str(logs / f"{replica_id}.log"),
    )
    coordination = ["--coordination", state.replica_coordination or state.coordination]
    env = None
    if state.kubernetes is not None:
        coordination += ["--namespace", state.kubernetes.namespace]
        env = {"KUBECONFIG": state.kubernetes.hub_kubeconfig}
    if state.store:
        coordination += ["--store", state.store]
    proc, record.process = processes.spawn_mooring(
        [
            "principal",
            "serve",
            "--id",
            replica_id,
            "--listen",
            record.endpoint,
            *coordination,
            "--redis",
            state.redis,
            "--tls-dir",
            record.tls_dir,
            "--metrics",
            record.metrics,
            "--history",
            str(Path(state.dir) / "history" / f"{replica_id}.jsonl"),
        ],
        log=Path(record.log),
        env=env,
        prefix=prefix,
    )
    return record, proc


def _wait_ready(
    started: list[tuple[str, subprocess.Popen[bytes], Path, str | None]],
    *,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Wait until each (what, process, log, HOST:PORT) listens there (or just runs)."""
    deadline = time.monotonic() + timeout
    pending = list(started)
    while pending:
        for item in list(pending):
            what, proc, log, endpoint = item
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited during startup (code {proc.returncode}); {log}: {_last_line(log)}"
                )
            if endpoint is None or _listening(endpoint):
                pending.remove(item)
        if pending and time.monotonic() > deadline:
            names = ", ".join(p[0] for p in pending)
            raise RuntimeError(
                f"{names} not ready after {timeout:.0f}s; see {Path(started[0][2]).parent}"
            )
        if pending:
            time.sleep(0.05)


async def seed_managed(
    coordination: str,
    agents: Sequence[str],
    *,
    apps: Sequence[str] = ("guestbook",),
    concurrency: int = 8,
) -> None:
    """Give every managed agent the sample Applications named `apps` in the store."""
    desired = principal.open_hub_store(coordination, timeout=10.0)
    try:
        await desired.connect()
        gate = asyncio.Semaphore(concurrency)

        async def one(agent: str) -> None:
            async with gate:
                for app in apps:
                    await desired.apply_desired(agent, sample_app(app))

        await asyncio.gather(*(one(a) for a in agents))
    finally:
        await desired.close()


def seed_autonomous(state_file: Path, *, app: str = "local-guestbook") -> None:
    """Give an autonomous agent's local store one synced, healthy sample Application."""
    local = agent_store.AgentStore(state_file, mode="autonomous")
    try:
        doc = sample_app(app)
        doc["status"] = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
        local.apply_local(doc)
    finally:
        local.close()


def _start_kube(kube: kubeapi.KubeAPIServer, state: state_.ClusterState) -> None:
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
            f"{HOST}:{kube.port}",
            str(kube.log_path),
            kube.handle,
        ),
    )
    state.store = f"kubernetes://?kubeconfig={kube.kubeconfig}"


def seed_autonomous_kube(kube: kubeapi.KubeAPIServer, namespace: str) -> None:
    """An autonomous agent's own sample Application, created in its Argo CD namespace."""
    doc = sample_app("local-guestbook")
    doc["status"] = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
    status, text = kube.request(
        "POST",
        f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applications",
        body=json.dumps(doc).encode(),
    )
    if status != 201:
        raise RuntimeError(f"seeding {namespace}: HTTP {status}: {text[:200]}")


def _endpoints_for(state: state_.ClusterState, index: int) -> list[str]:
    """Every replica endpoint, rotated per agent so first dials spread over the replicas."""
    endpoints = [r.endpoint for r in state.replicas]
    shift = index % len(endpoints)
    return endpoints[shift:] + endpoints[:shift]


def _fresh(directory: Path) -> None:
    """Remove the data of a previous (stopped) cluster in this dir; keep the PKI."""
    # history/ and chaos/ too: an earlier cluster's unclosed session opens and writer log
    # would read as I1 and I2 violations of this one
    for sub in ("etcd", "redis", "agents", "fleet", "logs", "kube", "history", "chaos"):
        shutil.rmtree(directory / sub, ignore_errors=True)


def _ensure_ca(directory: Path) -> None:
    if not (directory / pki.CA_CERT).exists():
        pki.init_ca(directory)
    else:
        pki.load_ca(directory)  # fail now, with its one-line reason, if it is unusable


# ----------------------------------------------------------------------------- up
def up(options: UpOptions, *, out: TextIO = sys.stdout) -> int:
    if options.kubernetes:  # before touching anything: one line saying what to build
        kubeapi.testbed_parts()
    else:
        services.require_binary("etcd")  # ... or naming the package to install
    services.require_binary("redis-server")
    directory = options.directory.resolve()
    with _Signals() as signals:
        with state_.locked(directory):
            _refuse_running(directory)
            state = _start(options, directory)
        signals.starting = False
        if signals.stop:
            _stop_all(directory, out=out)
            return 130
        print(_summary(state), file=out, flush=True)
        if options.detach:
            print(_agents_connected(state), file=out, flush=True)
            return 0
        try:
            with state_.locked(directory):
                current = state_.load(directory)
                current.supervisor = processes.Handle(
                    os.getpid(), processes.start_time(os.getpid())
                )
                state_.save(directory, current)
            _watch(directory, signals, out=out)
        finally:
            signals.starting = False
            signals.stop = True
            _stop_all(directory, out=out)
    return 0


def _refuse_running(directory: Path) -> None:
    if not state_.state_path(directory).exists():
        return
    with contextlib.suppress(state_.StateError):
        running = state_.load(directory).running()
        if running:
            pids = " ".join(str(p) for p in running[:6]) + (" ..." if len(running) > 6 else "")
            raise RuntimeError(
                f"a cluster is already running in {directory} (pids {pids}): "
                f"use `mooring status --dir {directory}`, or stop it with `mooring down --dir {directory}`"
            )


def _start(options: UpOptions, directory: Path) -> state_.ClusterState:
    """Start every part; on any failure (or Ctrl-C) stop what was started, then re-raise."""
    _fresh(directory)
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pki_dir = directory / "pki"
    _ensure_ca(pki_dir)
    kube: kubeapi.KubeAPIServer | None = None
    if options.kubernetes:
        apiserver, etcd36, crds = kubeapi.testbed_parts()
        kube = kubeapi.KubeAPIServer(
            directory / "kube", binary=apiserver, etcd_binary=etcd36, crds=crds
        )
        kube.log_path = logs / "kube-apiserver.log"
        etcd_cluster = kube.etcd
    else:
        etcd_cluster = services.EtcdCluster(
            directory / "etcd",
            members=options.etcd_members,
            placement=[_placed(options.netns, f"etcd{i}") for i in range(options.etcd_members)]
            if options.netns
            else None,
        )
    for member in etcd_cluster.members:
        member.log_path = logs / f"{member.name}.log"
    redis_prefix, redis_host = _placed(options.netns, "redis")
    redis = services.RedisServer(
        directory / "redis",
        host=redis_host,
        prefix=redis_prefix,
        port=services.PLACED_PORTS["redis"] if redis_prefix else None,
    )
    redis.log_path = logs / "redis.log"
    state = state_.ClusterState(
        dir=str(directory),
        coordination="kubernetes" if kube else etcd_cluster.url,
        redis=redis.url,
        pki=str(pki_dir),
        base_port=options.base_port,
        started=time.time(),
        netns=dict(options.netns) if options.netns else None,
        replica_coordination=options.replica_coordination,
    )
    try:
        state.etcd = [
            state_.ServiceRecord(m.name, m.endpoint, str(m.log_path)) for m in etcd_cluster.members
        ]
        state.redis_server = state_.ServiceRecord(
            "redis", f"{redis.host}:{redis.port}", str(redis.log_path)
        )
        if kube is not None:
            _start_kube(kube, state)
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
            services.wait_tcp(member.host, member.client_port, timeout=READY_TIMEOUT)
        etcd_cluster.wait_healthy(timeout=READY_TIMEOUT)

        started: list[tuple[str, subprocess.Popen[bytes], Path, str | None]] = []
        for index in range(1, options.replicas + 1):
            record, proc = _start_replica(state, index)
            state.replicas.append(record)
            started.append((f"replica {record.id}", proc, Path(record.log), record.endpoint))
        state_.save(directory, state)

        names = [agent_name(i) for i in range(1, options.agents + 1)]
        modes = {agent_name(i): agent_mode(i) for i in range(1, options.agents + 1)}
        for name in names:
            tls_dir = pki.issue_agent(pki_dir, name=name)
            agent_record = state_.AgentRecord(
                name=name,
                mode=modes[name],
                state=str(directory / "agents" / f"{name}.db"),
                tls_dir=str(tls_dir),
            )
            if kube is not None and state.kubernetes is not None:
                agent_record.state = ""
                agent_record.namespace = name
                agent_record.workload_namespace = f"argocd-{name}"
                kube.create_namespace(agent_record.workload_namespace)
                agent_record.store = (
                    f"kubernetes://?kubeconfig={state.kubernetes.workload_kubeconfig}"
                    f"&namespace={agent_record.workload_namespace}"
                )
            state.agents.append(agent_record)
        asyncio.run(
            seed_managed(
                state.store or state.coordination, [n for n in names if modes[n] == "managed"]
            )
        )
        for record_ in state.agents:
            if record_.mode != "autonomous":
                continue
            if kube is not None and record_.workload_namespace:
                seed_autonomous_kube(kube, record_.workload_namespace)
            else:
                seed_autonomous(Path(record_.state))
        _wait_ready(started)

        agent_started = _start_agents(state, options, directory)
        state_.save(directory, state)
        _wait_ready(agent_started)
        deadline = time.monotonic() + READY_TIMEOUT
        fleets_started = agent_started[: len(state.fleets)]
        for fleet_record, (_, fleet_proc, _, _) in zip(state.fleets, fleets_started, strict=True):
            while not Path(fleet_record.status_file).exists():
                if fleet_proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the agent fleet did not start; {fleet_record.log}: {_last_line(Path(fleet_record.log))}"
                    )
                time.sleep(0.05)
        if options.prometheus:
            monitoring.start_prometheus(
                state,
                directory,
                port=options.prometheus_port,
                for_scale=options.alert_for_scale,
            )
            state_.save(directory, state)
        return state
    except BaseException:
        _stop_state(state)
        state_.save(directory, state)
        raise


def _start_agents(
    state: state_.ClusterState, options: UpOptions, directory: Path
) -> list[tuple[str, subprocess.Popen[bytes], Path, str | None]]:
    logs = directory / "logs"
    started: list[tuple[str, subprocess.Popen[bytes], Path, str | None]] = []
    if not state.agents:
        return started
    if not options.agent_processes:
        count = min(options.fleets, len(state.agents))
        for k in range(count):
            # fleet k hosts every count-th agent; one fleet keeps the plain file names
            suffix = "" if count == 1 else f"-{k + 1}"
            status_file = directory / "fleet" / f"status{suffix}.json"
            spec = fleet.write_spec(
                directory / "fleet" / f"spec{suffix}.json",
                status_file=status_file,
                cluster_file=state_.state_path(directory),
                agents=[
                    {
                        "name": a.name,
                        "mode": a.mode,
                        "endpoints": _endpoints_for(state, i),
                        "tls_dir": a.tls_dir,
                        **({"store": a.store} if a.store else {"state": a.state}),
                    }
                    for i, a in enumerate(state.agents)
                    if i % count == k
                ],
            )
            record = state_.FleetRecord(
                spec=str(spec), status_file=str(status_file), log=str(logs / f"fleet{suffix}.log")
            )
            proc, record.process = processes.spawn_mooring(
                ["fleet", "run", "--spec", str(spec)],
                log=Path(record.log),
                prefix=_placed(state.netns, f"fleet{k + 1}")[0],
            )
            state.fleets.append(record)
            started.append((f"agent fleet{suffix}", proc, Path(record.log), None))
        return started
    for i, agent in enumerate(state.agents):
        agent.metrics = f"{HOST}:{services.free_port(HOST)}"
        agent.log = str(logs / f"agent-{agent.name}.log")
        proc, agent.process = processes.spawn_mooring(
            [
                "agent",
                "run",
                "--name",
                agent.name,
                "--mode",
                agent.mode,
                "--endpoints",
                ",".join(_endpoints_for(state, i)),
                "--tls-dir",
                agent.tls_dir,
                *(["--store", agent.store] if agent.store else ["--state", agent.state]),
                "--metrics",
                agent.metrics,
            ],
            log=Path(agent.log),
        )
        started.append((f"agent {agent.name}", proc, Path(agent.log), agent.metrics))
    return started


def _agents_connected(state: state_.ClusterState, *, timeout: float = AGENTS_TIMEOUT) -> str:
    """Wait (bounded) until every agent has a session, so that `up --detach` returns a
    cluster `mooring status` shows whole; the line says how many made it."""
    deadline = time.monotonic() + timeout
    while True:
        got = status_.collect(state)
        connected, total = got["agents_connected"], got["agents_total"]
        if connected == total or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    line = f"  agents connected: {connected}/{total}"
    if connected < total:
        line += f" after {timeout:.0f}s (the others keep retrying; see `mooring status`)"
    return line


def _summary(state: state_.ClusterState) -> str:
    managed = sum(1 for a in state.agents if a.mode == "managed")
    count = len(state.fleets)
    where = f"{count} fleet process{'es' if count > 1 else ''}" if count else "one process each"
    lines = [
        f"mooring: cluster up in {state.dir}",
        f"  replicas: {', '.join(f'{r.id}={r.endpoint}' for r in state.replicas)}",
        f"  agents:   {len(state.agents)} ({managed} managed, {len(state.agents) - managed} autonomous; {where})",
        f"  etcd:     {state.coordination}   redis: {state.redis}",
        f"  state:    {state_.state_path(Path(state.dir))}   logs: {Path(state.dir) / 'logs'}",
        f"  stop:     mooring down --dir {state.dir}",
    ]
    if state.prometheus:
        url = f"http://{state.prometheus.endpoint}"
        lines.insert(-1, f"  prometheus: {url}   (alerts: {url}/alerts)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- foreground
def _watch(directory: Path, signals: _Signals, *, out: TextIO) -> None:
    tty = out.isatty()
    interval = REFRESH_TTY if tty else REFRESH_PLAIN
    while not signals.stop:
        try:
            state = state_.load(directory)
        except state_.StateError:
            return
        table = status_.render(status_.collect(state))
        stamp = time.strftime("%H:%M:%S")
        with contextlib.suppress(OSError, ValueError):
            if tty:
                out.write(
                    f"\x1b[H\x1b[2J{stamp}  mooring up --dir {directory}  (Ctrl-C stops)\n\n{table}\n"
                )
            else:
                out.write(f"--- {stamp}\n{table}\n\n")
            out.flush()
        if not state.running():
            return
        deadline = time.monotonic() + interval
        while not signals.stop and time.monotonic() < deadline:
            time.sleep(0.05)


# ----------------------------------------------------------------------------- down / scale
def _tiers(state: state_.ClusterState) -> Iterator[list[processes.Handle | None]]:
    """Shutdown order: Prometheus, agents (they say goodbye), replicas, kube-apiserver, Redis, etcd."""
    yield [state.prometheus.process if state.prometheus else None]
    yield [f.process for f in state.fleets] + [a.process for a in state.agents]
    yield [r.process for r in state.replicas]
    yield [state.kubernetes.apiserver.process if state.kubernetes else None]
    yield [state.redis_server.process if state.redis_server else None]
    yield [m.process for m in state.etcd]


def _stop_state(state: state_.ClusterState) -> list[int]:
    killed: list[int] = []
    for tier in _tiers(state):
        killed += processes.terminate(tier, grace=STOP_GRACE)
    return killed


def _stop_all(directory: Path, *, out: TextIO) -> None:
    """Stop every process in cluster.json except ourselves; idempotent."""
    try:
        state = state_.load(directory)
    except state_.StateError:
        return
    running = [p for p in state.running() if p != os.getpid()]
    killed = _stop_state(state)
    with state_.locked(directory):
        current = state_.load(directory)
        current.supervisor = None
        state_.save(directory, current)
    if running:
        extra = f" ({len(killed)} needed SIGKILL: {killed})" if killed else ""
        with contextlib.suppress(OSError, ValueError):
            print(
                f"mooring: stopped {len(running)} processes in {directory}{extra}",
                file=out,
                flush=True,
            )


def down(directory: Path, *, out: TextIO = sys.stdout) -> int:
    """Stop everything recorded in DIR/cluster.json; a no-op when nothing runs."""
    directory = directory.resolve()
    if not state_.state_path(directory).exists():
        print(f"mooring: no local cluster in {directory}: nothing to stop", file=out)
        return 0
    state = state_.load(directory)
    supervisor = state.supervisor
    if supervisor is not None and supervisor.pid != os.getpid() and processes.alive(supervisor):
        # A foreground `mooring up` owns the cluster: let it stop everything in order.
        processes.terminate([supervisor], grace=SUPERVISOR_GRACE)
        print(
            f"mooring: the foreground `mooring up` (pid {supervisor.pid}) stopped the cluster in {directory}",
            file=out,
        )
    elif not state.running():
        print(f"mooring: the cluster in {directory} is not running", file=out)
    _stop_all(directory, out=out)
    return 0


def scale(directory: Path, replicas: int, *, out: TextIO = sys.stdout) -> int:
    """Start or stop principal replicas until p1..pN run; update cluster.json."""
    if replicas < 1:
        raise ValueError(f"--replicas must be at least 1, got {replicas}")
    directory = directory.resolve()
    with state_.locked(directory):
        state = state_.load(directory)
        if not any(processes.alive(m.process) for m in state.etcd):
            raise RuntimeError(
                f"the cluster in {directory} is not running: start it with `mooring up --dir {directory}`"
            )
        removed = [r for r in state.replicas if int(r.id[1:]) > replicas]
        processes.terminate([r.process for r in removed], grace=STOP_GRACE)
        kept = {r.id: r for r in state.replicas if int(r.id[1:]) <= replicas}
        started: list[tuple[str, subprocess.Popen[bytes], Path, str | None]] = []
        added = []
        for index in range(1, replicas + 1):
            current = kept.get(f"p{index}")
            if current is not None and processes.alive(current.process):
                continue
            record, proc = _start_replica(state, index)
            kept[record.id] = record
            added.append(record.id)
            started.append((f"replica {record.id}", proc, Path(record.log), record.endpoint))
        state.replicas = [kept[f"p{i}"] for i in range(1, replicas + 1)]
        state_.save(directory, state)
        _wait_ready(started)
    parts = []
    if added:
        parts.append(f"started {', '.join(added)}")
    if removed:
        parts.append(f"stopped {', '.join(r.id for r in removed)}")
    print(f"mooring: {replicas} replicas ({'; '.join(parts) or 'no change'})", file=out)
    return 0


def restart_replica(state: state_.ClusterState, replica_id: str) -> state_.ReplicaRecord:
    """Start replica `replica_id` of `state` again (same ports when free) and wait until
    it listens; `state` is updated, the caller saves it (`mooring start pN`)."""
    fresh, proc = _start_replica(state, int(replica_id[1:]))
    state.replicas = [fresh if r.id == replica_id else r for r in state.replicas]
    _wait_ready([(f"replica {replica_id}", proc, Path(fresh.log), fresh.endpoint)])
    return fresh
