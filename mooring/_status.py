"""`mooring status` for a local cluster: liveness, replica metrics, the agents' view.

Everything comes from DIR/cluster.json (pids, endpoints), each replica's /metrics, the
stores (shard map, registry, the sessions each replica reports in its member record)
and the fleet's status file (or, with --agent-processes, each agent's /metrics).
Metrics the replicas do not export yet are reported as None, never guessed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
from pathlib import Path
from typing import Any

import principal
from election import errors as cerrors
from election import lease, membership, shardmap, stores
from mooring import _fleet as fleet
from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_
from principal import registry
from proto import catalog, exposition

__all__ = [
    "REPLICA_SAMPLES",
    "SCRAPE_TIMEOUT",
    "ControlView",
    "collect",
    "control",
    "count_agents",
    "read_control",
    "redis_answers",
    "refused",
    "render",
    "replica_metrics",
    "summary",
]

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


STALE_AFTER = 5.0
"""Seconds without a renewal after which a member record's report is not believed (a
replica rewrites its record every second or so)."""


@dataclasses.dataclass
class ControlView:
    """What the stores say: the published map's owners, the agent registry, and what each
    replica reports in its member record (leader lease holder, sessions)."""

    epoch: int = 0
    owners: dict[str, str] = dataclasses.field(default_factory=dict)
    registered: dict[str, str] = dataclasses.field(default_factory=dict)  # agent -> mode
    members: list[membership.Member] = dataclasses.field(default_factory=list)
    member_live: dict[str, bool] = dataclasses.field(default_factory=dict)
    served: dict[str, str] = dataclasses.field(default_factory=dict)  # agent -> replica
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # replica -> sessions
    leader: str | None = None


def _age(stamp: Any, now: datetime.datetime) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (now - moment).total_seconds()


async def read_control(
    coordination: str,
    agents: list[str] | None = None,
    *,
    hub_store: str | None = None,
    namespace: str = "default",
    env: dict[str, str] | None = None,
    root: str = STORE_ROOT,
) -> ControlView:
    """The control plane as its stores hold it. `coordination` as `principal serve` takes
    it (with `namespace` and `env` for Leases); `hub_store` when the agent registry is
    not on the coordination etcd; `agents` to place beside the registered ones (a local
    cluster's, placed as the replicas would place them once they register).

    Liveness compares a record's renewTime with this host's clock: for people to read,
    never for decisions (the replicas judge by when they saw a record change)."""
    now = datetime.datetime.now(datetime.UTC)
    view = ControlView()
    records = stores.open_store(
        coordination, prefix=f"{root}election/", timeout=STORE_TIMEOUT, namespace=namespace, env=env
    )
    try:
        leader_record = await records.get(lease.LEASE_RECORD)
        map_record = await records.get(shardmap.MAP_RECORD)
        member_records = await records.list(membership.MEMBER_PREFIX)
    finally:
        await records.close()
    desired = principal.open_hub_store(
        hub_store or coordination, root=root, timeout=STORE_TIMEOUT, env=env
    )
    try:
        await desired.connect()
        view.registered = {a.name: a.mode for a in await desired.list_agents()}
    finally:
        await desired.close()
    if leader_record is not None:
        holder = str(leader_record.data.get(lease.HOLDER) or "")
        age = _age(leader_record.data.get(lease.RENEW_TIME), now)
        duration = float(leader_record.data.get(lease.DURATION) or 0)
        if holder and age is not None and age <= max(duration, 1.0):
            view.leader = holder
    freshest: dict[str, float] = {}
    for record in member_records:
        member = membership.Member.from_record(record)
        if member is None:
            continue
        age = _age(record.data.get(membership.RENEW_TIME), now)
        live = age is not None and age <= STALE_AFTER
        view.members.append(member)
        view.member_live[member.replica_id] = live
        report = member.extra.get(membership.SESSIONS)
        if not live or not isinstance(report, dict):
            continue
        if isinstance(report.get("count"), int):
            view.counts[member.replica_id] = report["count"]
        for agent in report.get("agents") or ():
            # Handing over, an agent may be in two reports: the newer record says where.
            if isinstance(agent, str) and age is not None and age < freshest.get(agent, 1e9):
                freshest[agent] = age
                view.served[agent] = member.replica_id
    view.members.sort(key=lambda m: str(m.replica_id))
    if map_record is not None:
        current = shardmap.ShardMap.from_data(map_record.data)
        view.epoch = current.epoch
        if current.members:
            names = set(view.registered)
            ring = current.build_ring(names)
            for agent in sorted(names | set(agents or ())):
                # An agent not registered yet is placed as the replicas would place it.
                placed = ring if agent in names else current.build_ring(names | {agent})
                view.owners[agent] = str(placed.owner(agent))
    return view


def control(state: state_.ClusterState) -> ControlView:
    """`read_control` for a local cluster, or an empty view when its stores cannot be read."""
    if not any(processes.alive(m.process) for m in state.etcd):
        return ControlView()
    with contextlib.suppress(cerrors.CoordinationError, principal.StoreError, ValueError, OSError,
                             TimeoutError):  # fmt: skip
        kube = state.kubernetes
        return asyncio.run(
            read_control(
                state.coordination,
                [a.name for a in state.agents],
                hub_store=state.store,
                namespace=kube.namespace if kube else "default",
                env={"KUBECONFIG": kube.hub_kubeconfig} if kube else None,
            )
        )
    return ControlView()


def redis_answers(url: str | None) -> bool | None:
    """Whether the Redis at `url` answers a PING (None: no Redis)."""
    if not url:
        return None

    async def ping() -> bool:
        reg = registry.SessionRegistry(url, timeout=1.0, ttl=7.0)
        try:
            return await reg.ping()
        finally:
            await reg.close()

    return asyncio.run(ping())


def refused(samples: exposition.Samples) -> str | None:
    """The reason an agent's /metrics gives for a refusal retrying cannot fix, if any."""
    for labels, value in samples.series(catalog.AGENT_REFUSED.name).items():
        if value == 1.0:
            return dict(labels).get("reason")
    return None


def replica_metrics(samples: exposition.Samples | None) -> dict[str, float | None]:
    """REPLICA_SAMPLES' values in a replica's scrape (None: not exported, or no answer)."""
    return {name: samples.value(name) if samples is not None else None for name in REPLICA_SAMPLES}


def _replica(record: state_.ReplicaRecord, samples: exposition.Samples | None) -> dict[str, Any]:
    live = processes.alive(record.process)
    metrics = replica_metrics(samples)
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


def _agents(state: state_.ClusterState, view: ControlView) -> list[dict[str, Any]]:
    seen = fleet_agents(state) or {}
    out = []
    for record in state.agents:
        row: dict[str, Any] = {
            "name": record.name,
            "mode": record.mode,
            "owner": view.owners.get(record.name),  # under the published shard map
            "connected_to": view.served.get(record.name),  # as the replicas report it
            "sessions": None,
        }
        row["connected"] = row["connected_to"] is not None
        if record.process is not None:  # its own process: ask its /metrics
            samples = (
                exposition.scrape(record.metrics, timeout=SCRAPE_TIMEOUT)
                if record.metrics and processes.alive(record.process)
                else None
            )
            row["connected"] = False
            if samples is not None:
                row["connected"] = samples.value(catalog.AGENT_CONNECTED.name) == 1.0
                row["sessions"] = int(samples.sum(catalog.SESSIONS.name) or 0)
                if reason := refused(samples):
                    row["refused"] = reason
        elif record.name in seen:  # a fleet's status file: fresher than the replicas' reports
            info = seen[record.name]
            row["connected"] = bool(info.get("connected"))
            row["connected_to"] = info.get("replica_id") or None
            row["sessions"] = info.get("sessions")
            if info.get("refused"):
                row["refused"] = info["refused"]
        elif state.fleets:  # its fleet is not running
            row["connected"], row["connected_to"] = False, None
        if not row["connected"]:
            row["connected_to"] = None
        out.append(row)
    return out


def collect(state: state_.ClusterState) -> dict[str, Any]:
    """The `mooring status --json` document for a local cluster."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        scraped = list(
            pool.map(
                lambda r: (
                    exposition.scrape(r.metrics, timeout=SCRAPE_TIMEOUT)
                    if processes.alive(r.process)
                    else None
                ),
                state.replicas,
            )
        )
        redis_live = pool.submit(
            redis_answers, state.redis if state.redis_server is not None else None
        )
        view = control(state)
        agents = _agents(state, view)
    replicas = [_replica(r, s) for r, s in zip(state.replicas, scraped, strict=True)]
    count_agents(replicas, agents, view)
    etcd = [
        {"name": m.name, "endpoint": m.endpoint, "live": processes.alive(m.process)}
        for m in state.etcd
    ]
    return {
        "dir": state.dir,
        **summary(replicas, agents, view),
        "coordination": state.coordination,
        "redis": services.redacted(state.redis),  # cluster.json (0600) has the password
        "replicas": replicas,
        "agents": agents,
        "etcd": etcd,
        "redis_live": bool(redis_live.result()),
        "fleet_live": (
            all(processes.alive(f.process) for f in state.fleets) if state.fleets else None
        ),
        "running": bool(state.running()),
    }


def count_agents(
    replicas: list[dict[str, Any]], agents: list[dict[str, Any]], view: ControlView
) -> None:
    """Each replica's AGENTS: the agents on it (as the agents or, for the agents that do
    not say, the replicas report), else the count it reports (it names only so many)."""
    for replica in replicas:
        on_it = sum(1 for a in agents if a["connected"] and a["connected_to"] == replica["id"])
        reported = view.counts.get(replica["id"]) if replica["live"] else None
        replica["agents"] = on_it or reported or 0


def summary(
    replicas: list[dict[str, Any]], agents: list[dict[str, Any]], view: ControlView
) -> dict[str, Any]:
    """The document's leader, epoch and agent counts, from the rows."""
    leaders = [r["id"] for r in replicas if r["live"] and r["metrics"][catalog.LEADER.name] == 1.0]
    epochs = [
        int(r["metrics"][catalog.SHARD_EPOCH.name])
        for r in replicas
        if r["live"] and r["metrics"][catalog.SHARD_EPOCH.name] is not None
    ]
    leader = leaders[0] if len(leaders) == 1 else (sorted(leaders)[0] if leaders else None)
    return {
        "epoch": max(epochs, default=view.epoch),
        "leader": leader or (view.leader if not leaders else None),
        "leaders": sorted(leaders),
        "agents_connected": sum(1 for a in agents if a["connected"]),
        "agents_total": len(agents),
        "agents_on_owner": sum(
            1 for a in agents if a["connected"] and a["owner"] and a["owner"] == a["connected_to"]
        ),
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
    if status.get("etcd") is not None:
        etcd_live = sum(1 for m in status["etcd"] if m["live"])
        store = f"etcd: {etcd_live}/{len(status['etcd'])} live ({status['coordination']})"
    else:  # read from the stores themselves: they answered
        store = f"store: {status['coordination']} (answering)"
    if status["redis"]:
        url = services.redacted(status["redis"])
        redis = f"redis: {'live' if status['redis_live'] else 'not answering'} ({url})"
    elif status.get("etcd") is None:
        redis = "redis: not read (--redis URL reads who holds which agent)"
    else:
        redis = "redis: none (holds are per replica)"
    lines += [
        "",
        f"leader: {_show(status['leader'])}   epoch: {status['epoch']}   "
        f"agents connected: {status['agents_connected']}/{status['agents_total']} ({by_mode}; "
        f"{status['agents_on_owner']} on their owner)",
        f"{store}   {redis}",
    ]
    refused = [f"{a['name']} ({a['refused']})" for a in status["agents"] if a.get("refused")]
    if refused:
        lines.append(f"refused until fixed: {', '.join(refused)} (see their logs)")
    return "\n".join(lines)
