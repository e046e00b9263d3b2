"""Many in-process agents in one process: `mooring fleet run --spec FILE`.

Each agent is a full `agent.Agent` with its own SQLite state file, certificate and
Prometheus registry; they share one event loop. Every second the fleet rewrites a
small JSON status file (atomically) listing each agent's name, mode, connection,
replica, session count, failovers and refusal; `mooring status` and `mooring up` read it.

Spec file (JSON)::

    {"status_file": PATH, "cluster_file": PATH or null,
     "agents": [{"name", "mode", "endpoints": [HOST:PORT, ...], "tls_dir", "state",
                 "settings": {FIELD: VALUE, ...} (optional)}]}

`settings` overrides any other `AgentSettings` field (timers, keepalive, backoff),
e.g. ``{"connect_timeout": 1.0, "keepalive_time": 5}``; the units are the field's own.

When `cluster_file` names a cluster.json, replicas added later (`mooring scale`)
are added to every agent's endpoint set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from agent import client as agent_client
from agent import endpoints as endpoints_
from agent import settings as agent_settings
from proto import limits

__all__ = ["load_spec", "read_status", "run", "write_spec"]

logger = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0
"""Seconds between rewrites of the status file."""
DIAL_CONCURRENCY = 32
"""Agents of one fleet dialling (TLS handshake + hello) at the same time, at most."""
STALE_AFTER = 5.0
"""Seconds after which a status file that was not rewritten is not believed."""
TUNABLE = frozenset(f.name for f in dataclasses.fields(agent_settings.AgentSettings)) - {
    "name",
    "mode",
    "endpoints",
    "tls_dir",
    "state",
}
"""AgentSettings fields an agent's optional `settings` object in the spec may set."""


def write_spec(
    path: Path,
    *,
    status_file: Path,
    cluster_file: Path | None,
    agents: list[dict[str, Any]],
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "status_file": str(status_file),
        "cluster_file": str(cluster_file) if cluster_file else None,
        "agents": agents,
    }
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def load_spec(path: Path) -> tuple[Path, Path | None, list[agent_settings.AgentSettings]]:
    try:
        spec = json.loads(Path(path).read_text())
    except OSError as err:
        raise RuntimeError(f"cannot read fleet spec {path}: {err.strerror}") from err
    except ValueError as err:
        raise RuntimeError(f"fleet spec {path} is not JSON: {err}") from err
    try:
        agents = []
        for a in spec["agents"]:
            extra = dict(a.get("settings") or {})
            unknown = sorted(set(extra) - TUNABLE)
            if unknown:
                raise RuntimeError(
                    f"fleet spec {path}: agent {a['name']}: unknown setting(s) {', '.join(unknown)}"
                )
            agents.append(
                agent_settings.AgentSettings(
                    name=a["name"],
                    mode=a["mode"],
                    endpoints=tuple(a["endpoints"]),
                    tls_dir=Path(a["tls_dir"]),
                    state=Path(a["state"]) if a.get("state") else None,
                    store=a.get("store"),
                    **extra,
                )
            )
        cluster = spec.get("cluster_file")
        return Path(spec["status_file"]), Path(cluster) if cluster else None, agents
    except (KeyError, TypeError) as err:
        raise RuntimeError(f"fleet spec {path} lacks {err}") from err


def _agent_status(agent: agent_client.Agent, *, stopped: bool) -> dict[str, Any]:
    connected = agent.welcomed.is_set() and not stopped
    return {
        "name": agent.settings.name,
        "mode": agent.settings.mode,
        "connected": connected,
        "link": str(agent.link),  # agent._link's state
        "replica_id": agent.replica_id if connected else None,
        "epoch": agent.epoch,
        "sessions": agent.sessions_opened,
        "standby": agent.standby,  # the endpoint its replica named for when it fails
        "refused": agent.refused,  # a refusal no retry cures (agent._refusals), or None
        # (lost at, seconds to resynced) per failover; monotonic clock, comparable
        # across processes on one host (bench/bench_failover.py reads them)
        "failovers": [[round(lost, 4), round(took, 4)] for lost, took in agent.failovers],
    }


def _write_status(path: Path, agents: list[agent_client.Agent], *, stopped: bool = False) -> None:
    data = {
        "pid": os.getpid(),
        "updated": time.time(),
        "stopped": stopped,
        "agents": [_agent_status(a, stopped=stopped) for a in agents],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, dict[str, Any]] | None:
    """Agent name -> status, or None when the file is missing or stale."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if time.time() - float(data.get("updated", 0)) > STALE_AFTER:
        return None
    return {a["name"]: a for a in data.get("agents", [])}


def _add_new_endpoints(
    cluster_file: Path, agents: list[agent_client.Agent], *, seen: dict[str, float]
) -> None:
    """Sync every agent's endpoints with the cluster file, when the file changed."""
    try:
        mtime = cluster_file.stat().st_mtime
        if seen.get("mtime") == mtime:
            return
        endpoints = json.loads(cluster_file.read_text()).get("endpoints") or []
    except (OSError, ValueError):
        return
    seen["mtime"] = mtime
    if not endpoints:
        return
    listed = set(endpoints)
    for agent in agents:
        # The cluster file is the truth for a local cluster: add new replicas, forget
        # the addresses of replicas that are gone (so no sweep dials them first).
        kept = [e for e in agent.endpoints.endpoints if e.address in listed]
        known = {e.address for e in kept}
        kept += [endpoints_.Endpoint(a) for a in endpoints if a not in known]
        agent.endpoints.endpoints = kept


async def run(spec_path: Path) -> None:
    """Run every agent of the spec until SIGTERM/SIGINT; then stop them all."""
    limits.raise_open_files_limit()  # one connection per agent, and a store each
    status_file, cluster_file, settings = load_spec(spec_path)
    gate = asyncio.Semaphore(DIAL_CONCURRENCY)
    agents = [agent_client.Agent(s, dial_gate=gate) for s in settings]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("fleet: %d agents", len(agents))
    cluster_seen: dict[str, float] = {}
    try:
        async with asyncio.TaskGroup() as group:
            for agent in agents:
                group.create_task(agent.run(), name=f"agent-{agent.settings.name}")
            while not stop.is_set():
                _write_status(status_file, agents)
                if cluster_file is not None:
                    _add_new_endpoints(cluster_file, agents, seen=cluster_seen)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STATUS_INTERVAL):
                        await stop.wait()
            logger.info("fleet: stopping %d agents", len(agents))
            for agent in agents:
                agent.stop()
    finally:
        with contextlib.suppress(OSError):
            _write_status(status_file, agents, stopped=True)
