"""`mooring status` for a local cluster: liveness, replica metrics, the agents' view.

Everything comes from DIR/cluster.json (pids, endpoints), each replica's /metrics
and the fleet's status file (or, with --agent-processes, each agent's /metrics).
Metrics the replicas do not export yet are reported as None, never guessed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import parser as prom_parser

import principal
from election import _errors as cerrors
from election import _shardmap as shardmap
from election import _stores as stores
from mooring import _fleet as fleet
from mooring import _processes as processes
from mooring import _state as state_
from proto import catalog

__all__ = ["REPLICA_SAMPLES", "collect", "owners", "render", "scrape"]

REPLICA_SAMPLES = tuple(
    f.name
    for f in (catalog.LEADER, catalog.SHARD_EPOCH, catalog.SESSIONS_OPEN, catalog.AGENTS_OWNED)
)
SCRAPE_TIMEOUT = 1.0
"""Seconds to wait for one /metrics answer."""
STORE_TIMEOUT = 2.0
"""Seconds for one etcd call while reading the shard map."""
STORE_ROOT = "/mooring/"
"""Key prefix of everything the replicas write (PrincipalSettings.store_root's default)."""


async def _read_owners(
    coordination: str,
    agents: list[str],
    *,
    hub_store: str | None = None,
    namespace: str = "default",
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Agent -> owner replica id under the published shard map (empty when there is none).

    `coordination` as `principal serve` takes it (with `namespace` and `env` for Leases);
    `hub_store` when the agent registry is not on the coordination etcd."""
    records = stores.open_store(
        coordination,
        prefix=f"{STORE_ROOT}election/",
        timeout=STORE_TIMEOUT,
        namespace=namespace,
        env=env,
    )
    try:
        record = await records.get(shardmap.MAP_RECORD)
        if record is None:
            return {}
        current = shardmap.ShardMap.from_data(record.data)
        registered = await _registered(hub_store or coordination)
        ring = current.build_ring(registered)
        out = {}
        for agent in agents:  # an agent not registered yet is placed as the replicas would
            placed = ring if agent in registered else current.build_ring(registered | {agent})
            out[agent] = str(placed.owner(agent))
        return out
    finally:
        await records.close()


async def _registered(coordination: str) -> set[str]:
    desired = principal.open_hub_store(coordination, timeout=STORE_TIMEOUT)
    try:
        await desired.connect()
        return {a.name for a in await desired.list_agents()}
    finally:
        await desired.close()


def owners(state: state_.ClusterState) -> dict[str, str]:
    """`_read_owners`, or nothing when etcd or the map cannot be read."""
    if not any(processes.alive(m.process) for m in state.etcd):
        return {}
    with contextlib.suppress(cerrors.CoordinationError, ValueError, OSError, TimeoutError):
        kube = state.kubernetes
        return asyncio.run(
            _read_owners(
                state.coordination,
                [a.name for a in state.agents],
                hub_store=state.store,
                namespace=kube.namespace if kube else "default",
                env={"KUBECONFIG": kube.hub_kubeconfig} if kube else None,
            )
        )
    return {}


def scrape(address: str, *, timeout: float = SCRAPE_TIMEOUT) -> dict[str, float] | None:
    """Sample name -> value from http://ADDRESS/metrics: a counter's samples summed over
    its label sets, any other family's unlabelled sample only."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    out: dict[str, float] = {}
    for family in prom_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if family.type == "counter":
                out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
            elif not sample.labels:
                out[sample.name] = float(sample.value)
    return out


def _replica(record: state_.ReplicaRecord, samples: dict[str, float] | None) -> dict[str, Any]:
    live = processes.alive(record.process)
    metrics = {name: (samples or {}).get(name) for name in REPLICA_SAMPLES}
    return {
        "id": record.id,
        "endpoint": record.endpoint,
        "live": live,
        "pid": record.process.pid if record.process else None,
        "metrics": metrics,
        "metrics_endpoint": record.metrics,
        "log": record.log,
        "agents": 0,
    }


def fleet_agents(state: state_.ClusterState) -> dict[str, dict[str, Any]] | None:
    """Agent name -> what its fleet reports, over every fleet; None if a live fleet's
    status file is missing or stale (a dead fleet's agents are simply absent)."""
    seen: dict[str, dict[str, Any]] = {}
    for record in state.fleets:
        if not processes.alive(record.process):
            continue
        got = fleet.read_status(Path(record.status_file))
        if got is None:
            return None
        seen.update(got)
    return seen


def _agents(state: state_.ClusterState) -> list[dict[str, Any]]:
    owned = owners(state)
    seen = fleet_agents(state) or {}
    out = []
    for record in state.agents:
        row: dict[str, Any] = {
            "name": record.name,
            "mode": record.mode,
            "owner": owned.get(record.name),  # under the published shard map
            "connected_to": None,
            "connected": False,
            "sessions": None,
        }
        if record.process is not None:  # its own process: ask its /metrics
            samples = (
                scrape(record.metrics)
                if record.metrics and processes.alive(record.process)
                else None
            )
            if samples is not None:
                row["connected"] = samples.get(catalog.AGENT_CONNECTED.name) == 1.0
                row["sessions"] = int(samples.get(catalog.SESSIONS.name, 0))
        elif record.name in seen:
            info = seen[record.name]
            row["connected"] = bool(info.get("connected"))
            row["connected_to"] = info.get("replica_id") or None
            row["sessions"] = info.get("sessions")
        out.append(row)
    return out


def collect(state: state_.ClusterState) -> dict[str, Any]:
    """The `mooring status --json` document for a local cluster."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        scraped = list(
            pool.map(
                lambda r: scrape(r.metrics) if processes.alive(r.process) else None,
                state.replicas,
            )
        )
        agents = _agents(state)
    replicas = [_replica(r, s) for r, s in zip(state.replicas, scraped, strict=True)]
    by_id = {r["id"]: r for r in replicas}
    for agent in agents:
        if agent["connected"] and agent["connected_to"] in by_id:
            by_id[agent["connected_to"]]["agents"] += 1
    if not state.fleets:
        # Agents in their own processes do not say where they are: use the replicas' count.
        for replica in replicas:
            open_ = replica["metrics"][catalog.SESSIONS_OPEN.name]
            replica["agents"] = int(open_) if open_ is not None else 0
    leaders = [r["id"] for r in replicas if r["live"] and r["metrics"][catalog.LEADER.name] == 1.0]
    epochs = [
        int(r["metrics"][catalog.SHARD_EPOCH.name])
        for r in replicas
        if r["live"] and r["metrics"][catalog.SHARD_EPOCH.name] is not None
    ]
    etcd = [
        {"name": m.name, "endpoint": m.endpoint, "live": processes.alive(m.process)}
        for m in state.etcd
    ]
    redis = state.redis_server
    return {
        "dir": state.dir,
        "epoch": max(epochs, default=0),
        "leader": leaders[0] if len(leaders) == 1 else (sorted(leaders)[0] if leaders else None),
        "leaders": sorted(leaders),
        "coordination": state.coordination,
        "redis": state.redis,
        "replicas": replicas,
        "agents": agents,
        "agents_connected": sum(1 for a in agents if a["connected"]),
        "agents_total": len(agents),
        "agents_on_owner": sum(
            1 for a in agents if a["connected"] and a["owner"] and a["owner"] == a["connected_to"]
        ),
        "etcd": etcd,
        "redis_live": processes.alive(redis.process) if redis else False,
        "fleet_live": (
            all(processes.alive(f.process) for f in state.fleets) if state.fleets else None
        ),
        "running": bool(state.running()),
    }


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    for row in rows:
        lines.append("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())
    return lines


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def _count(value: float | None) -> str:
    return "-" if value is None else str(int(value))


def _flag(value: float | None) -> str:
    return "-" if value is None else ("yes" if value == 1.0 else "no")


def render(status: dict[str, Any]) -> str:
    """A readable table of replicas, then one summary line per plane."""
    rows = [
        {
            "id": r["id"],
            "endpoint": r["endpoint"],
            "pid": _show(r["pid"]),
            "live": "yes" if r["live"] else "no",
            "leader": _flag(r["metrics"][catalog.LEADER.name]),
            "agents": r["agents"],
            "sessions": _count(r["metrics"][catalog.SESSIONS_OPEN.name]),
        }
        for r in status["replicas"]
    ]
    lines = _table(rows, ["id", "endpoint", "pid", "live", "leader", "agents", "sessions"])
    modes: dict[str, int] = {}
    for agent in status["agents"]:
        if agent["connected"]:
            modes[agent["mode"]] = modes.get(agent["mode"], 0) + 1
    by_mode = ", ".join(f"{n} {m}" for m, n in sorted(modes.items())) or "none"
    etcd_live = sum(1 for m in status["etcd"] if m["live"])
    lines += [
        "",
        f"leader: {_show(status['leader'])}   epoch: {status['epoch']}   "
        f"agents connected: {status['agents_connected']}/{status['agents_total']} ({by_mode}; "
        f"{status['agents_on_owner']} on their owner)",
        f"etcd: {etcd_live}/{len(status['etcd'])} live ({status['coordination']})   "
        f"redis: {'live' if status['redis_live'] else 'down'} ({status['redis']})",
    ]
    return "\n".join(lines)
