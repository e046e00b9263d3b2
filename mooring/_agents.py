"""The agents of a local cluster: names and modes, certificates and records, their
processes (fleet processes hosting them all, or one `mooring agent run` each), and
waiting until they have their sessions."""

from __future__ import annotations

import time
from pathlib import Path

import agent as agent_pkg
from mooring import _fleet as fleet
from mooring import _kubeapi as kubeapi
from mooring import _kubecluster as kubecluster
from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_
from mooring import _status as status_
from principal import pki

__all__ = [
    "AGENTS_TIMEOUT",
    "AUTONOMOUS_EVERY",
    "add",
    "agent_mode",
    "agent_name",
    "start",
    "wait_connected",
    "wait_fleets",
    "wait_on_owner",
]

AUTONOMOUS_EVERY = 4
"""Every 4th agent (edge-04, edge-08, ...) is autonomous, the rest managed."""
AGENTS_TIMEOUT = 30.0
"""Seconds `up --detach` waits for every agent's first session."""


def agent_name(index: int) -> str:
    return f"edge-{index:02d}"


def agent_mode(index: int) -> str:
    return "autonomous" if index % AUTONOMOUS_EVERY == 0 else "managed"


def add(state: state_.ClusterState, count: int, *, kube: kubeapi.KubeAPIServer | None) -> None:
    """Record agents edge-01..edge-<count> in `state`, each with its certificate and its
    store: a state file under agents/, or with `kube` its own Argo CD namespace."""
    for index in range(1, count + 1):
        name = agent_name(index)
        tls_dir = pki.issue_agent(Path(state.pki), name=name)
        record = state_.AgentRecord(
            name=name,
            mode=agent_mode(index),
            state=str(Path(state.dir) / "agents" / f"{name}.db"),
            tls_dir=str(tls_dir),
        )
        if kube is not None and state.kubernetes is not None:
            kubecluster.place_agent(kube, state.kubernetes, record)
        state.agents.append(record)


def _endpoints_for(state: state_.ClusterState, index: int) -> list[str]:
    """Every replica endpoint, rotated per agent so first dials spread over the replicas."""
    endpoints = [r.endpoint for r in state.replicas]
    shift = index % len(endpoints)
    return endpoints[shift:] + endpoints[:shift]


def start(
    state: state_.ClusterState, *, agent_processes: bool, fleets: int
) -> list[processes.Started]:
    """Start the agents of `state`: `fleets` fleet processes sharing them, or with
    `agent_processes` one process each; recorded in `state`, the caller saves it."""
    directory = Path(state.dir)
    logs = directory / "logs"
    started: list[processes.Started] = []
    if not state.agents:
        return started
    if not agent_processes:
        count = min(fleets, len(state.agents))
        for k in range(count):
            # fleet k hosts every count-th agent; one fleet keeps the plain file names
            suffix = "" if count == 1 else f"-{k + 1}"
            status_file = directory / "fleet" / f"status{suffix}.json"
            hosted = [(i, a) for i, a in enumerate(state.agents) if i % count == k]
            for i, a in hosted:  # what the fleet builds from its spec, recorded
                a.settings = agent_pkg.flags.effective(_settings_for(state, i))
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
                    for i, a in hosted
                ],
            )
            record = state_.FleetRecord(
                spec=str(spec), status_file=str(status_file), log=str(logs / f"fleet{suffix}.log")
            )
            proc, record.process = processes.spawn_mooring(
                ["fleet", "run", "--spec", str(spec)],
                log=Path(record.log),
                prefix=processes.placed(state.netns, f"fleet{k + 1}")[0],
            )
            state.fleets.append(record)
            started.append((f"agent fleet{suffix}", proc, Path(record.log), None))
        return started
    for i, agent in enumerate(state.agents):
        agent.metrics = f"{processes.HOST}:{services.free_port(processes.HOST)}"
        agent.log = str(logs / f"agent-{agent.name}.log")
        settings = _settings_for(state, i)
        agent.settings = agent_pkg.flags.effective(settings)
        proc, agent.process = processes.spawn_mooring(
            ["agent", "run", *agent_pkg.flags.to_argv(settings)], log=Path(agent.log)
        )
        started.append((f"agent {agent.name}", proc, Path(agent.log), agent.metrics))
    return started


def _settings_for(state: state_.ClusterState, index: int) -> agent_pkg.settings.AgentSettings:
    """The settings the `index`-th agent of `state` runs with (in its own process or a
    fleet's): its identity, endpoints and store, every other field its default."""
    agent = state.agents[index]
    return agent_pkg.settings.AgentSettings(
        name=agent.name,
        mode=agent.mode,  # type: ignore[arg-type]  # "managed" | "autonomous", as recorded
        endpoints=tuple(_endpoints_for(state, index)),
        tls_dir=Path(agent.tls_dir),
        store=agent.store or None,
        state=None if agent.store else Path(agent.state),
        metrics=agent.metrics,
    )


def wait_fleets(
    state: state_.ClusterState,
    started: list[processes.Started],
    *,
    timeout: float = processes.READY_TIMEOUT,
) -> None:
    """Wait until every fleet process of `state` (the first of `started`) has written its
    first status file."""
    deadline = time.monotonic() + timeout
    fleets_started = started[: len(state.fleets)]
    for fleet_record, (_, fleet_proc, _, _) in zip(state.fleets, fleets_started, strict=True):
        while not Path(fleet_record.status_file).exists():
            if fleet_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the agent fleet did not start; {fleet_record.log}: {processes.last_line(Path(fleet_record.log))}"
                )
            time.sleep(0.05)


def wait_connected(state: state_.ClusterState, *, timeout: float = AGENTS_TIMEOUT) -> str:
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


def wait_on_owner(state: state_.ClusterState, *, timeout: float) -> tuple[str, bool]:
    """Wait until every agent has a session with its owner under the published map
    (`up --detach --wait`); the line says how long it took, or who is not there yet."""
    started = time.monotonic()
    while True:
        got = status_.collect(state)
        on_owner, total = got["agents_on_owner"], got["agents_total"]
        if on_owner == total:
            took = time.monotonic() - started
            return f"  agents on their owner: {on_owner}/{total} ({took:.1f}s)", True
        if time.monotonic() - started > timeout:
            off = [a["name"] for a in got["agents"] if a["connected_to"] != a["owner"]]
            shown = ", ".join(off[:5]) + (f" and {len(off) - 5} more" if len(off) > 5 else "")
            return (
                f"mooring: error: after {timeout:g}s only {on_owner}/{total} agents are on"
                f" their owner (not yet: {shown}); see `mooring status --dir {state.dir}`",
                False,
            )
        time.sleep(0.2)
