"""An in-process record store for unit tests, with switchable faults.

`MemoryStore` keeps records in a `MemoryBackend`; several stores may share one
backend (`store.peer()`), each with its own fault switches, so a test can cut one
replica off the store while the others carry on:

- `fail = True`: every call raises `StoreUnavailableError` at once;
- `hang = True`: every call blocks until `hang` is cleared (then proceeds), the
  store's timeout passes (then `StoreUnavailableError`), or the caller cancels;
- `delay = seconds`: every call waits that long (loop time) before it runs.

Versions are a store-wide counter, like etcd's mod_revision. Data is copied
through JSON on the way in and out, so it must be JSON-serializable (as on etcd)
and callers never share mutable state with the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from election import _errors as errors
from election import _records as records

__all__ = ["MemoryBackend", "MemoryStore"]


@dataclasses.dataclass
class MemoryBackend:
    """The records themselves: name -> (JSON text, version)."""

    entries: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    revision: int = 0

    def bump(self) -> int:
        self.revision += 1
        return self.revision


def _encode(data: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"record data is not JSON-serializable: {err}") from err


def _record(name: str, text: str, version: int) -> records.Record:
    return records.Record(name=name, data=json.loads(text), version=str(version))


def _version(record: records.Record) -> int:
    try:
        return int(record.version)
    except ValueError:
        return -1  # never matches: a foreign token is a lost compare-and-swap


class MemoryStore:
    """RecordStore over a (possibly shared) in-memory backend."""

    def __init__(
        self, *, timeout: float | None = 2.0, backend: MemoryBackend | None = None
    ) -> None:
        self.timeout = timeout
        self.backend = backend if backend is not None else MemoryBackend()
        self.fail = False
        self.delay = 0.0
        self.calls = 0
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._closed = False

    @property
    def hang(self) -> bool:
        return not self._healthy.is_set()

    @hang.setter
    def hang(self, value: bool) -> None:
        if value:
            self._healthy.clear()
        else:
            self._healthy.set()

    def peer(self) -> MemoryStore:
        """Another store over the same records, with its own fault switches."""
        return MemoryStore(timeout=self.timeout, backend=self.backend)

    async def _enter(self, what: str) -> None:
        self.calls += 1
        if self._closed:
            raise errors.StoreUnavailableError(f"memory {what}: store is closed")
        if self.fail:
            raise errors.StoreUnavailableError(f"memory {what}: injected failure")
        try:
            async with asyncio.timeout(self.timeout):
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                await self._healthy.wait()
        except TimeoutError as err:
            raise errors.StoreUnavailableError(f"memory {what}: timed out") from err

    async def get(self, name: str) -> records.Record | None:
        await self._enter("get")
        entry = self.backend.entries.get(name)
        return None if entry is None else _record(name, *entry)

    async def create(self, name: str, data: Mapping[str, Any]) -> records.Record:
        text = _encode(data)
        await self._enter("create")
        if name in self.backend.entries:
            raise errors.ConflictError(f"memory create {name!r}: already exists")
        version = self.backend.bump()
        self.backend.entries[name] = (text, version)
        return _record(name, text, version)

    async def update(self, record: records.Record, data: Mapping[str, Any]) -> records.Record:
        text = _encode(data)
        await self._enter("update")
        self._check(record, "update")
        version = self.backend.bump()
        self.backend.entries[record.name] = (text, version)
        return _record(record.name, text, version)

    async def update_fenced(
        self,
        record: records.Record | None,
        data: Mapping[str, Any],
        *,
        fence: records.Record,
        name: str | None = None,
    ) -> records.Record:
        """Write iff `fence` still has its version and `record` its own (None: create `name`)."""
        target = _fenced_target(record, name)
        if target == fence.name:
            raise ValueError("a record cannot be fenced by itself")
        text = _encode(data)
        await self._enter("update_fenced")
        self._check(fence, "fence")
        if record is None:
            if target in self.backend.entries:
                raise errors.ConflictError(f"memory create {target!r}: already exists")
        else:
            self._check(record, "update_fenced")
        version = self.backend.bump()
        self.backend.entries[target] = (text, version)
        return _record(target, text, version)

    async def delete(self, record: records.Record) -> None:
        await self._enter("delete")
        self._check(record, "delete")
        del self.backend.entries[record.name]
        self.backend.bump()

    async def list(self, prefix: str = "") -> list[records.Record]:
        await self._enter("list")
        return [
            _record(name, *entry)
            for name, entry in sorted(self.backend.entries.items())
            if name.startswith(prefix)
        ]

    async def close(self) -> None:
        self._closed = True

    def _check(self, record: records.Record, what: str) -> None:
        entry = self.backend.entries.get(record.name)
        if entry is None or entry[1] != _version(record):
            raise errors.ConflictError(
                f"memory {what} {record.name!r}: version {record.version} is stale"
            )


def _fenced_target(record: records.Record | None, name: str | None) -> str:
    if record is not None:
        if name is not None and name != record.name:
            raise ValueError(f"name {name!r} does not match record {record.name!r}")
        return record.name
    if name is None:
        raise ValueError("update_fenced needs `name` when creating (record is None)")
    return name
