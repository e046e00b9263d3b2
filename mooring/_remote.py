"""`mooring status --coordination ... [--redis ...]`: a cluster seen from its stores.

Reads the control plane (leader lease, member records, shard map, agent registry)
and, with --redis, the session registry (who holds which agent, last seen). No
replica has to be reachable. Liveness here compares a record's renewTime with this
host's wall clock, so it is for people to read, not for decisions: the replicas
themselves judge liveness by when they saw a record change.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import principal
from election import _electing as electing
from election import _etcd as etcd
from election import _etcdrecords as etcdrecords
from election import _membership as membership
from election import _shardmap as shardmap
from principal import _registry as registry

__all__ = ["collect"]

STALE_AFTER = 10.0  # seconds without a renewal after which a record is shown as not live


def _age(stamp: Any, now: datetime.datetime) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (now - moment).total_seconds()


async def _collect(coordination: str, redis_url: str | None, store_root: str) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    kv = etcd.EtcdKV(etcd.parse_endpoints(coordination), timeout=3.0)
    records = etcdrecords.EtcdRecordStore(kv, prefix=f"{store_root}election/")
    try:
        await kv.connect()
        lease = await records.get(electing.LEASE_RECORD)
        map_record = await records.get(shardmap.MAP_RECORD)
        member_records = await records.list(membership.MEMBER_PREFIX)
    finally:
        await records.close()  # closes kv too
    desired = principal.open_hub_store(coordination, root=store_root, timeout=3.0)
    try:
        await desired.connect()
        agents = await desired.list_agents()
    finally:
        await desired.close()
    current = shardmap.ShardMap.from_data(map_record.data) if map_record else None

    entries: dict[str, registry.Entry] = {}
    seen: dict[str, int | None] = {}
    if redis_url:
        reg = registry.SessionRegistry(redis_url, timeout=2.0, ttl=7.0)
        try:
            entries = await reg.entries()
            seen = await reg.last_seen([a.name for a in agents])
        finally:
            await reg.close()

    leader = None
    if lease is not None:
        holder = str(lease.data.get(electing.HOLDER) or "")
        age = _age(lease.data.get(electing.RENEW_TIME), now)
        duration = float(lease.data.get(electing.DURATION) or 0)
        if holder and age is not None and age <= max(duration, 1.0) * 2:
            leader = holder

    names = {a.name for a in agents}
    owners: dict[str, str] = {}
    if current is not None and current.members:
        placed = current.build_ring(names)
        owners = {a: str(placed.owner(a)) for a in names}

    replicas = []
    for record in member_records:
        member = membership.Member.from_record(record)
        if member is None:
            continue
        age = _age(record.data.get(membership.RENEW_TIME), now)
        replicas.append(
            {
                "id": member.replica_id,
                "endpoint": member.endpoint,
                "live": age is not None and age <= STALE_AFTER,
                "agents": sum(1 for e in entries.values() if e.replica == member.replica_id),
                "pid": member.pid,
                "metrics": member.metrics,
                "applied_epoch": member.applied_epoch,
            }
        )
    rows = []
    for agent in agents:
        entry = entries.get(agent.name)
        rows.append(
            {
                "name": agent.name,
                "mode": agent.mode,
                "owner": owners.get(agent.name),
                "connected_to": entry.replica if entry else None,
                "connected": entry is not None if redis_url else None,
                "token": entry.token if entry else None,
                "last_seen_ms": seen.get(agent.name),
            }
        )
    return {
        "epoch": current.epoch if current else 0,
        "leader": leader,
        "coordination": coordination,
        "redis": redis_url,
        "replicas": sorted(replicas, key=lambda r: str(r["id"])),
        "agents": rows,
        "agents_connected": sum(1 for r in rows if r["connected"]),
        "agents_total": len(rows),
        "agents_on_owner": sum(
            1 for r in rows if r["connected"] and r["owner"] == r["connected_to"]
        ),
    }


def collect(
    coordination: str, *, redis: str | None, store_root: str = "/mooring/"
) -> dict[str, Any]:
    return asyncio.run(_collect(coordination, redis, store_root))
