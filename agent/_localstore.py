"""The agent store seam: what an agent needs of its local store, and one place to open it.

The session code works through `LocalStore` only; `open_local_store(url)` picks the
backend: `sqlite:///FILE` (`agent/_store.py`, the embedded default of `mooring up`;
`sqlite:////abs/path` for an absolute path, as SQLAlchemy writes them) or
`kubernetes://[?kubeconfig=PATH][&namespace=NS]` (`agent/_kubestore.py`: the workload
cluster's own Argo CD objects). One conformance suite
(tests/integration/test_local_store_conformance.py) runs over both.

What a local store holds, per (kind, name): the object (`proto.objects.synced_object`)
with its checksum and version (the principal's version for a managed agent; a local,
increasing version for an autonomous one), the status Argo CD reports, and two marks of
what the principal has acknowledged: `status_synced` (managed) and `synced_version`
(autonomous). A deleted autonomous object stays as a tombstone until acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from agent import _store as sqlite_store
from agent._store import LocalResource, LocalStoreError, Mode

__all__ = ["LocalResource", "LocalStore", "LocalStoreError", "SqliteLocalStore", "open_local_store"]


class LocalStore(Protocol):
    mode: Mode

    async def close(self) -> None: ...

    async def rows(self, *, include_deleted: bool = False) -> list[LocalResource]: ...

    async def get(self, kind: str, name: str) -> LocalResource | None: ...

    async def unsynced(self) -> list[LocalResource]:
        """What the principal has not acknowledged yet: status (managed), objects and
        tombstones (autonomous)."""
        ...

    async def apply_remote_upsert(
        self,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        checksum: str,
        force: bool,
    ) -> bool:
        """Apply the principal's object; True if it changed the store. Idempotent by
        version; `force` (during a resync) also takes an older version with another
        checksum. LocalStoreError when the store refuses the object."""
        ...

    async def apply_remote_delete(
        self, kind: str, name: str, *, version: int, force: bool
    ) -> bool: ...

    async def mark_status_synced(self, kind: str, name: str, status_checksum: str) -> None: ...

    async def mark_synced(self, kind: str, name: str, version: int) -> None: ...

    async def data_version(self) -> int:
        """A number that changes whenever something other than this store object wrote."""
        ...

    async def drifted(self) -> str:
        """Managed agents: "" while every object is as the principal sent it, else what was
        changed behind Mooring's back (one line); the agent then resyncs, which repairs it.
        As the last `rows()`/`unsynced()` and the store's watch saw it: it makes no request."""
        ...


class SqliteLocalStore:
    """`LocalStore` over the SQLite file (its calls take well under a millisecond, so they
    run on the event loop)."""

    def __init__(self, path: str | Path, *, mode: Mode) -> None:
        self.sync = sqlite_store.AgentStore(path, mode=mode)
        self.mode = self.sync.mode

    async def close(self) -> None:
        self.sync.close()

    async def rows(self, *, include_deleted: bool = False) -> list[LocalResource]:
        return self.sync.list(include_deleted=include_deleted)

    async def get(self, kind: str, name: str) -> LocalResource | None:
        return self.sync.get(kind, name)

    async def unsynced(self) -> list[LocalResource]:
        return list(self.sync.unsynced())

    async def apply_remote_upsert(
        self,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        checksum: str,
        force: bool,
    ) -> bool:
        return self.sync.apply_remote_upsert(
            kind, name, obj=obj, version=version, checksum=checksum, force=force
        )

    async def apply_remote_delete(self, kind: str, name: str, *, version: int, force: bool) -> bool:
        return self.sync.apply_remote_delete(kind, name, version=version, force=force)

    async def mark_status_synced(self, kind: str, name: str, status_checksum: str) -> None:
        self.sync.mark_status_synced(kind, name, status_checksum)

    async def mark_synced(self, kind: str, name: str, version: int) -> None:
        self.sync.mark_synced(kind, name, version)

    async def data_version(self) -> int:
        return self.sync.data_version()

    async def drifted(self) -> str:
        return ""  # the SQLite store refuses local changes to a managed agent's objects


def open_local_store(url: str, *, mode: Mode, agent: str, timeout: float = 5.0) -> LocalStore:
    """The local store a URL names: `sqlite:///FILE` or `kubernetes://...`."""
    if url.startswith("sqlite:"):
        # As SQLAlchemy writes them: sqlite:///relative/file, sqlite:////absolute/file.
        path = url.removeprefix("sqlite:///")
        if path == url or not path:
            raise ValueError(f"bad local store URL {url[:80]!r}: expected sqlite:///FILE")
        return SqliteLocalStore(path, mode=mode)
    if url.startswith("kubernetes://"):
        from agent import _kubestore as kubestore

        return kubestore.from_url(url, mode=mode, agent=agent, timeout=timeout)
    raise ValueError(
        f"bad local store URL {url[:80]!r}: expected sqlite:///FILE or"
        " kubernetes://[?kubeconfig=PATH][&namespace=NS]"
    )
