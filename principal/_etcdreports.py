"""What agents report about their resources, in the etcd hub store: managed resources'
status (`status/...`, with the refusals of a spec) and each agent's last answer about
each resource (`delivered/...`, `hub.Delivery`).

A report about a resource the hub does not have is dropped, as on Kubernetes. Errors of
the etcd layer leave here as they are; the store (`principal._store`) maps them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from election import etcd
from principal import _etcdkeys as etcdkeys
from principal import _hub as hub
from proto import codec

__all__ = ["EtcdReports"]


class EtcdReports:
    """Status and delivery reports on `kv`, at `keys`."""

    def __init__(self, kv: etcd.EtcdKV, keys: etcdkeys.Keys) -> None:
        self.kv = kv
        self.keys = keys

    # --- status of managed resources ----------------------------------------------
    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool:
        if await self.kv.get(self.keys.app(agent, kind, name)) is None:
            return False  # no such resource: nothing to report on (as on Kubernetes)
        key = self.keys.status(agent, kind, name)
        digest = codec.checksum(status)
        raw = await self.kv.get(key)
        if raw is not None and json.loads(raw.value).get("status_checksum") == digest:
            return False
        value = {"status": status, "status_checksum": digest, "spec_version": spec_version}
        await self.kv.put(key, etcdkeys.dumps(value))
        return True

    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        if kind != "Application":
            return  # an AppProject's status has no conditions
        key = self.keys.status(agent, kind, name)
        raw = await self.kv.get(key)
        record: dict[str, Any] = json.loads(raw.value) if raw is not None else {"spec_version": 0}
        status = hub.refusal_conditions(record.get("status"), message)
        record.update(status=status, status_checksum=codec.checksum(status))
        await self.kv.put(key, etcdkeys.dumps(record))

    async def list_status(self, agent: str) -> dict[tuple[str, str], dict[str, Any]]:
        items, _ = await self.kv.get_prefix(self.keys.status_of(agent))
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for item in items:
            _, _, kind, name = item.key.decode().rsplit("/", 3)
            out[(kind, name)] = json.loads(item.value)
        return out

    # --- what agents acknowledged ---------------------------------------------------
    async def put_deliveries(
        self, agent: str, deliveries: Mapping[tuple[str, str], hub.Delivery | None]
    ) -> None:
        puts, deletes = [], []
        for (kind, name), delivery in deliveries.items():
            key = self.keys.delivered(agent, kind, name)
            if delivery is None:
                deletes.append(key)
            elif await self.kv.get(self.keys.app(agent, kind, name)) is not None:
                puts.append((key, etcdkeys.dumps(delivery.to_data())))
        batch = etcdkeys.TXN_DELETES // 2
        for start in range(0, max(len(puts), len(deletes)), batch):
            end = start + batch
            await self.kv.txn(puts=puts[start:end], deletes=deletes[start:end])

    async def list_deliveries(self, agent: str) -> dict[tuple[str, str], hub.Delivery]:
        items, _ = await self.kv.get_prefix(self.keys.delivered_of(agent))
        out: dict[tuple[str, str], hub.Delivery] = {}
        for item in items:
            _, _, kind, name = item.key.decode().rsplit("/", 3)
            try:
                delivery = hub.Delivery.from_data(json.loads(item.value))
            except ValueError:
                delivery = None  # written around Mooring: not an answer, so not shown
            if delivery is not None:
                out[(kind, name)] = delivery
        return out
