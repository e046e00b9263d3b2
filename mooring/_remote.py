"""`mooring status --coordination ... [--redis ...]`: any cluster, seen from its stores.

Reads the control plane (leader lease, member records with the sessions each replica
reports, shard map, agent registry) and scrapes each replica's /metrics where its member
record names an address this host can reach. With --redis, who holds which agent comes
from the session registry, the authority on it. The document and its table are those of
a local cluster (`mooring/_status.py`), less what only a local cluster knows (pids'
liveness, logs, etcd members).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from mooring import _services as services
from mooring import _status as status_
from principal import registry
from proto import exposition

__all__ = ["collect"]


async def _holders(redis_url: str, agents: list[str]) -> dict[str, dict[str, Any]]:
    reg = registry.SessionRegistry(redis_url, timeout=2.0, ttl=7.0)
    try:
        entries = await reg.entries()
        seen = await reg.last_seen(agents)
    finally:
        await reg.close()
    return {
        agent: {
            "replica": entries[agent].replica if agent in entries else None,
            "token": entries[agent].token if agent in entries else None,
            "last_seen_ms": seen.get(agent),
        }
        for agent in agents
    }


def collect(
    coordination: str, *, redis: str | None, store_root: str = "/mooring/"
) -> dict[str, Any]:
    view = asyncio.run(status_.read_control(coordination, root=store_root))
    holders = asyncio.run(_holders(redis, sorted(view.registered))) if redis else {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        scraped = list(
            pool.map(
                lambda m: (
                    exposition.scrape(m.metrics, timeout=status_.SCRAPE_TIMEOUT)
                    if m.metrics
                    else None
                ),
                view.members,
            )
        )
        redis_live = pool.submit(status_.redis_answers, redis)
    replicas = [
        {
            "id": str(m.replica_id),
            "endpoint": m.endpoint,
            "live": view.member_live.get(m.replica_id, False),
            "pid": m.pid,
            "metrics": status_.replica_metrics(samples),
            "metrics_endpoint": m.metrics,
            "applied_epoch": m.applied_epoch,
            "log": None,
            "agents": 0,
        }
        for m, samples in zip(view.members, scraped, strict=True)
    ]
    agents = []
    for name, mode in sorted(view.registered.items()):
        held = holders.get(name) or {}
        connected_to = held.get("replica") if redis else view.served.get(name)
        agents.append(
            {
                "name": name,
                "mode": mode,
                "owner": view.owners.get(name),
                "connected_to": connected_to,
                "connected": connected_to is not None,
                "sessions": None,
                "token": held.get("token"),
                "last_seen_ms": held.get("last_seen_ms"),
            }
        )
    status_.count_agents(replicas, agents, view)
    return {
        **status_.summary(replicas, agents, view),
        "coordination": coordination,
        "redis": services.redacted(redis) if redis else None,
        "redis_live": redis_live.result(),
        "replicas": replicas,
        "agents": agents,
        "etcd": None,
        "running": any(r["live"] for r in replicas),
    }
