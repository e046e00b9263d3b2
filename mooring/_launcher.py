"""The local cluster: `mooring up`, `mooring scale`, `mooring down`.

`up` starts real etcd (1 or 3 members) and Redis from PATH, issues every
certificate, starts N `mooring principal serve` processes and M agents (one
fleet process hosting them all, or one `mooring agent run` process each), seeds
a few sample Applications, and records everything in DIR/cluster.json. In the
foreground it shows a live status table until Ctrl-C or SIGTERM, then stops
everything; with `detach` it returns once the cluster is up.

`scale` and `down` work from cluster.json alone, so they also work after the
`up` process has crashed.

This module is the lifecycle (the state dir and its lock, start in order, watch, stop
in order); the parts are started by _backends (etcd, Redis; _kubecluster with
--kubernetes), _replicas, _agents and _seeding, Prometheus by _monitoring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from mooring import _agents as agents
from mooring import _backends as backends
from mooring import _monitoring as monitoring
from mooring import _processes as processes
from mooring import _replicas as replicas_
from mooring import _seeding as seeding
from mooring import _services as services
from mooring import _state as state_
from mooring import _status as status_
from principal import pki

__all__ = [
    "UpOptions",
    "agent_mode",
    "down",
    "register_agents",
    "restart_replica",
    "scale",
    "seed_autonomous",
    "seed_managed",
    "up",
]

# Moved to the modules that do them; still importable from here, where bench/ and
# mooring/_control.py call them (`launcher.seed_managed(...)`, `launcher.restart_replica`).
agent_mode = agents.agent_mode
register_agents = seeding.register_agents
restart_replica = replicas_.restart_replica
seed_autonomous = seeding.seed_autonomous
seed_managed = seeding.seed_managed

STOP_GRACE = 10.0
"""Seconds a process has between SIGTERM and SIGKILL."""
SUPERVISOR_GRACE = 40.0
"""Seconds a foreground `mooring up` has to stop its cluster when `down` asks it to."""
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
    wait: float | None = None  # with detach: seconds to wait for every agent on its owner
    kubernetes: bool = False  # Leases, the hub store and the agents on a real kube-apiserver
    prometheus: bool = False  # a real Prometheus scraping everything, with the alert rules
    prometheus_port: int | None = None  # its HTTP port (default: a free one)
    alert_for_scale: float = 1.0  # every alert rule's `for:` times this (local demos: 0.1)
    # Run processes in network namespaces (the chaos suite): name (etcd0, redis, p1,
    # fleet1, ...) -> {"namespace", "host"}; the caller must run in a namespace that
    # reaches those hosts. Not a CLI flag.
    netns: dict[str, dict[str, str]] | None = None
    # The etcd URL the replicas dial instead of the cluster's (a proxy in between; the
    # cluster's own user, password file and CA are added to it).
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
        if self.wait is not None and not (self.wait > 0 and math.isfinite(self.wait)):
            raise ValueError(f"--wait must be a positive number of seconds, got {self.wait:g}")
        if self.wait is not None and not self.detach:
            raise ValueError("--wait needs --detach (in the foreground `up` shows the cluster)")
        if self.alert_for_scale <= 0:
            raise ValueError(f"--alert-for-scale must be positive, got {self.alert_for_scale}")
        if (
            self.base_port is not None
            and not 1024 <= self.base_port <= 65535 - 2 * replicas_.METRICS_OFFSET
        ):
            raise ValueError(f"--base-port {self.base_port} is out of range (1024-65335)")


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


# ----------------------------------------------------------------------------- state dir
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
    backends.require(kubernetes=options.kubernetes)
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
        if options.detach and options.wait is not None:
            line, settled = agents.wait_on_owner(state, timeout=options.wait)
            print(line, file=out, flush=True)
            return 0 if settled else 1
        if options.detach:
            print(agents.wait_connected(state), file=out, flush=True)
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
    parts = backends.prepare(
        directory,
        etcd_members=options.etcd_members,
        kubernetes=options.kubernetes,
        netns=options.netns,
    )
    state = state_.ClusterState(
        dir=str(directory),
        coordination=parts.coordination,
        redis=parts.redis.url,
        pki=str(pki_dir),
        base_port=options.base_port,
        started=time.time(),
        netns=dict(options.netns) if options.netns else None,
        replica_coordination=parts.through(options.replica_coordination),
    )
    try:
        backends.start(parts, state, directory)

        started: list[processes.Started] = []
        for index in range(1, options.replicas + 1):
            record, proc = replicas_.start_replica(state, index)
            state.replicas.append(record)
            started.append(replicas_.startup(record, proc))
        state_.save(directory, state)

        agents.add(state, options.agents, kube=parts.kube)
        seeding.seed(state, parts.kube)
        processes.wait_ready(started)

        agent_started = agents.start(
            state, agent_processes=options.agent_processes, fleets=options.fleets
        )
        state_.save(directory, state)
        processes.wait_ready(agent_started)
        agents.wait_fleets(state, agent_started)
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


def _summary(state: state_.ClusterState) -> str:
    managed = sum(1 for a in state.agents if a.mode == "managed")
    count = len(state.fleets)
    where = f"{count} fleet process{'es' if count > 1 else ''}" if count else "one process each"
    lines = [
        f"mooring: cluster up in {state.dir}",
        f"  replicas: {', '.join(f'{r.id}={r.endpoint}' for r in state.replicas)}",
        f"  agents:   {len(state.agents)} ({managed} managed, {len(state.agents) - managed} autonomous; {where})",
        f"  etcd:     {state.coordination}   redis: {services.redacted(state.redis)}",
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
        started: list[processes.Started] = []
        added = []
        for index in range(1, replicas + 1):
            current = kept.get(f"p{index}")
            if current is not None and processes.alive(current.process):
                continue
            record, proc = replicas_.start_replica(state, index)
            kept[record.id] = record
            added.append(record.id)
            started.append(replicas_.startup(record, proc))
        state.replicas = [kept[f"p{i}"] for i in range(1, replicas + 1)]
        state_.save(directory, state)
        processes.wait_ready(started)
    parts = []
    if added:
        parts.append(f"started {', '.join(added)}")
    if removed:
        parts.append(f"stopped {', '.join(r.id for r in removed)}")
    print(f"mooring: {replicas} replicas ({'; '.join(parts) or 'no change'})", file=out)
    return 0
