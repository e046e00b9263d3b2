"""The record store on etcd: one JSON value per record under a key prefix.

A record `name` lives at key `prefix + name`; its version token is the key's
mod_revision (as a decimal string). Creates, updates and deletes are single etcd
transactions compared on mod_revision, so a lost race is a `ConflictError`, never
a silent overwrite. `update_fenced` adds the leader's lease record to the same
comparison: a leader-only write lands only while that lease is still exactly the
version the leader last wrote (I4, fenced leadership).

The store talks to etcd only through `election._etcd.EtcdKV`, which bounds every
call by its timeout; the store owns the `EtcdKV` it is given and closes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from election import _errors as errors
from election import _etcd as etcd
from election import _records as records

__all__ = ["EtcdRecordStore"]


def _encode(data: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(dict(data), sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as err:
        raise ValueError(f"record data is not JSON-serializable: {err}") from err


def _decode(key: bytes, value: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(value)
    except ValueError as err:
        raise errors.CoordinationError(f"etcd key {key!r} does not hold JSON: {err}") from err
    if not isinstance(data, dict):
        raise errors.CoordinationError(f"etcd key {key!r} does not hold a JSON object")
    return data


def _revision(record: records.Record) -> int:
    try:
        revision = int(record.version)
    except ValueError:
        raise errors.ConflictError(
            f"record {record.name!r} has a foreign version token {record.version!r}"
        ) from None
    if revision <= 0:  # 0 would mean "absent" to an etcd compare
        raise errors.ConflictError(f"record {record.name!r} has no etcd revision")
    return revision


class EtcdRecordStore:
    """RecordStore over etcd; `name` maps to key `prefix + name`."""

    def __init__(self, kv: etcd.EtcdKV, *, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix

    def _key(self, name: str) -> bytes:
        return (self.prefix + name).encode()

    async def get(self, name: str) -> records.Record | None:
        key = self._key(name)
        got = await self.kv.get(key)
        if got is None:
            return None
        return records.Record(
            name=name, data=_decode(key, got.value), version=str(got.mod_revision)
        )

    async def create(self, name: str, data: Mapping[str, Any]) -> records.Record:
        value = _encode(data)
        revision = await self.kv.create(self._key(name), value)
        if revision is None:
            raise errors.ConflictError(f"etcd create {name!r}: already exists")
        return records.Record(name=name, data=json.loads(value), version=str(revision))

    async def update(self, record: records.Record, data: Mapping[str, Any]) -> records.Record:
        value = _encode(data)
        revision = await self.kv.update(
            self._key(record.name), value, mod_revision=_revision(record)
        )
        if revision is None:
            raise errors.ConflictError(
                f"etcd update {record.name!r}: version {record.version} is stale"
            )
        return records.Record(name=record.name, data=json.loads(value), version=str(revision))

    async def update_fenced(
        self,
        record: records.Record | None,
        data: Mapping[str, Any],
        *,
        fence: records.Record,
        name: str | None = None,
    ) -> records.Record:
        """Write `data` iff `fence` and `record` are both unchanged, in one transaction.

        `record=None` creates `name` iff it is absent. Raises `ConflictError` when
        the fence (the leader's lease record) or the target moved on.
        """
        if record is not None:
            if name is not None and name != record.name:
                raise ValueError(f"name {name!r} does not match record {record.name!r}")
            target, target_revision = record.name, _revision(record)
        elif name is None:
            raise ValueError("update_fenced needs `name` when creating (record is None)")
        else:
            target, target_revision = name, 0
        if target == fence.name:
            raise ValueError("a record cannot be fenced by itself")
        value = _encode(data)
        revision = await self.kv.txn(
            compare_mod=[
                (self._key(fence.name), _revision(fence)),
                (self._key(target), target_revision),
            ],
            puts=[(self._key(target), value)],
        )
        if revision is None:
            raise errors.ConflictError(
                f"etcd fenced write {target!r}: fence {fence.name!r}@{fence.version}"
                " or the record changed"
            )
        return records.Record(name=target, data=json.loads(value), version=str(revision))

    async def delete(self, record: records.Record) -> None:
        if not await self.kv.delete_if(self._key(record.name), mod_revision=_revision(record)):
            raise errors.ConflictError(
                f"etcd delete {record.name!r}: version {record.version} is stale"
            )

    async def list(self, prefix: str = "") -> list[records.Record]:
        found, _ = await self.kv.get_prefix(self._key(prefix))
        strip = len(self.prefix.encode())
        return sorted(
            (
                records.Record(
                    name=kv.key[strip:].decode(),
                    data=_decode(kv.key, kv.value),
                    version=str(kv.mod_revision),
                )
                for kv in found
            ),
            key=lambda record: record.name,
        )

    async def close(self) -> None:
        await self.kv.close()
