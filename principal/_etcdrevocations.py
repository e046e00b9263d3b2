"""The etcd hub store's certificate revocation list: one key per revoked certificate
(`revoked/<key>`, `hub.Revocation`), read, written once, and followed by a watch.

An entry written around Mooring that cannot be decoded is no entry. Errors of the etcd
layer leave here as they are; the store (`principal._store`) maps them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

from election import etcd
from principal import _etcdkeys as etcdkeys
from principal import _hub as hub

__all__ = ["EtcdRevocations"]


class EtcdRevocations:
    """The revocation list on `kv`, at `keys`."""

    def __init__(self, kv: etcd.EtcdKV, keys: etcdkeys.Keys) -> None:
        self.kv = kv
        self.keys = keys

    async def revoke(self, entry: hub.Revocation) -> tuple[hub.Revocation, bool]:
        """(the entry stored, whether this call stored it): a certificate already revoked
        keeps its first entry."""
        key = self.keys.revoked(entry.key)
        for _ in range(8):
            if await self.kv.create(key, etcdkeys.dumps(entry.to_data())) is not None:
                return entry, True
            raw = await self.kv.get(key)
            if raw is not None:
                return _revocation(raw.value) or entry, False
        raise hub.StoreError("revoke: too much contention, try again")

    async def list_revocations(self) -> list[hub.Revocation]:
        items, _ = await self.kv.get_prefix(self.keys.revoked_prefix)
        return _revocations([item.value for item in items])

    async def watch_revocations(self) -> AsyncGenerator[list[hub.Revocation], None]:
        """The list, then again at every change of it."""
        # As watch_agents: one read, then the watch from right after it.
        items, revision = await self.kv.get_prefix(self.keys.revoked_prefix)
        values = {item.key: item.value for item in items}
        yield _revocations(list(values.values()))
        feed = self.kv.watch_prefix(self.keys.revoked_prefix, start_revision=revision + 1)
        async for event in feed:
            if event.kind is etcd.WatchKind.DELETE:
                values.pop(event.key, None)
            else:
                values[event.key] = event.value
            yield _revocations(list(values.values()))


def _revocation(value: bytes) -> hub.Revocation | None:
    try:
        return hub.Revocation.from_data(json.loads(value))
    except ValueError:
        return None  # written around Mooring: not an entry


def _revocations(values: list[bytes]) -> list[hub.Revocation]:
    entries = (_revocation(value) for value in values)
    return sorted((e for e in entries if e is not None), key=lambda e: e.key)
