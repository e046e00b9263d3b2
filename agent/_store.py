"""The agent's local store: SQLite, the embedded stand-in for the cluster's Argo CD objects.

One row per resource. `version` is the principal's version for managed rows and a
local, store-wide increasing counter for autonomous rows. Local writes (status in
managed mode, whole objects in autonomous mode) may come from another process
(`mooring app apply --agent-state`); the running agent notices them through
SQLite's data_version and pushes what is not yet acknowledged.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from agent import _errors as errors
from proto import codec, objects

__all__ = ["AgentStore", "LocalResource", "LocalStoreError"]

Mode = Literal["managed", "autonomous"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    object TEXT NOT NULL,
    checksum TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT,
    status_checksum TEXT NOT NULL DEFAULT '',
    status_synced TEXT NOT NULL DEFAULT '',
    synced_version INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, name)
);
"""


class LocalStoreError(errors.AgentError):
    """A local store operation was refused (one readable line)."""


@dataclasses.dataclass(frozen=True, slots=True)
class LocalResource:
    kind: str
    name: str
    object: dict[str, Any]
    checksum: str
    version: int
    status: dict[str, Any] | None
    status_checksum: str
    status_synced: str
    synced_version: int
    deleted: bool

    def manifest(self) -> dict[str, Any]:
        meta = dict(self.object.get("metadata") or {})
        meta["name"] = self.name
        doc: dict[str, Any] = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": self.kind,
            "metadata": meta,
            "spec": self.object.get("spec") or {},
        }
        if self.status is not None:
            doc["status"] = self.status
        return doc


def _row(row: sqlite3.Row) -> LocalResource:
    return LocalResource(
        kind=row["kind"],
        name=row["name"],
        object=json.loads(row["object"]),
        checksum=row["checksum"],
        version=int(row["version"]),
        status=json.loads(row["status"]) if row["status"] is not None else None,
        status_checksum=row["status_checksum"],
        status_synced=row["status_synced"],
        synced_version=int(row["synced_version"]),
        deleted=bool(row["deleted"]),
    )


class AgentStore:
    """Synchronous SQLite access (local, sub-millisecond); one instance per process."""

    def __init__(self, path: str | Path, *, mode: Mode | None = None, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise LocalStoreError(f"no agent store at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise LocalStoreError(f"cannot open agent store {self.path}: {err}") from err
        stored = self._meta("mode")
        if mode is not None:
            if stored is None:
                self._set_meta("mode", mode)
            elif stored != mode:
                raise LocalStoreError(
                    f"agent store {self.path} belongs to a {stored} agent, not {mode}"
                )
        self.mode: Mode = mode or stored or "managed"  # type: ignore[assignment]

    def close(self) -> None:
        self.db.close()

    # --- meta -----------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def _next_version(self) -> int:
        current = int(self._meta("counter") or "0") + 1
        self._set_meta("counter", str(current))
        return current

    # --- reads ----------------------------------------------------------------------
    def get(self, kind: str, name: str) -> LocalResource | None:
        row = self.db.execute(
            "SELECT * FROM resources WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        return None if row is None else _row(row)

    def list(self, *, include_deleted: bool = False) -> list[LocalResource]:
        sql = "SELECT * FROM resources" + ("" if include_deleted else " WHERE deleted = 0")
        return [_row(r) for r in self.db.execute(sql + " ORDER BY kind, name")]

    def unsynced(self) -> Iterator[LocalResource]:
        """Rows with something the principal has not acknowledged yet."""
        if self.mode == "autonomous":
            sql = "SELECT * FROM resources WHERE version > synced_version"
        else:
            sql = "SELECT * FROM resources WHERE status IS NOT NULL AND status_checksum != status_synced"
        for row in self.db.execute(sql).fetchall():
            yield _row(row)

    # --- managed: what the principal sends ------------------------------------------
    def apply_remote_upsert(
        self,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        checksum: str,
        force: bool,
    ) -> bool:
        """Apply a principal's object; True if it changed the store (idempotent by version)."""
        current = self.get(kind, name)
        if current is not None:
            newer = version > current.version
            if not newer and not (force and checksum != current.checksum):
                return False
            if current.checksum == checksum:
                return False  # the same object again (the hub rewrote only its metadata)
        self.db.execute(
            "INSERT INTO resources(kind, name, object, checksum, version) VALUES(?, ?, ?, ?, ?) "
            "ON CONFLICT(kind, name) DO UPDATE SET object = excluded.object, "
            "checksum = excluded.checksum, version = excluded.version, deleted = 0",
            (kind, name, codec.canonical_json(dict(obj)), checksum, version),
        )
        return True

    def apply_remote_delete(self, kind: str, name: str, *, version: int, force: bool) -> bool:
        current = self.get(kind, name)
        if current is None or (version < current.version and not force):
            return False
        self.db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))
        return True

    def mark_status_synced(self, kind: str, name: str, status_checksum: str) -> None:
        self.db.execute(
            "UPDATE resources SET status_synced = ? WHERE kind = ? AND name = ?",
            (status_checksum, kind, name),
        )

    # --- autonomous: what the principal acknowledged --------------------------------
    def mark_synced(self, kind: str, name: str, version: int) -> None:
        self.db.execute(
            "UPDATE resources SET synced_version = MAX(synced_version, ?) WHERE kind = ? AND name = ?",
            (version, kind, name),
        )
        self.db.execute(
            "DELETE FROM resources WHERE kind = ? AND name = ? AND deleted = 1 AND synced_version >= version",
            (kind, name),
        )

    # --- local writes (the CLI, or Argo CD in a real cluster) ----------------------------
    def apply_local(self, doc: Mapping[str, Any]) -> tuple[LocalResource, bool]:
        """Apply a manifest locally: a whole object (autonomous) or its status (managed)."""
        try:
            # A managed agent's local write is a status report: it names its object only.
            kind, name = objects.validate_manifest(doc, need_spec=self.mode == "autonomous")
        except objects.InvalidObjectError as err:
            raise LocalStoreError(str(err)) from err
        status = doc.get("status")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            current = self.get(kind, name)
            if self.mode == "managed":
                changed = self._set_status(kind, name, current, status, doc)
            else:
                changed = self._upsert_autonomous(kind, name, current, doc, status)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        got = self.get(kind, name)
        assert got is not None
        return got, changed

    def _set_status(
        self,
        kind: str,
        name: str,
        current: LocalResource | None,
        status: Any,
        doc: Mapping[str, Any],
    ) -> bool:
        if current is None:
            raise LocalStoreError(
                f"{kind} {name} does not exist on this managed agent: its spec comes from the principal"
            )
        if (
            doc.get("spec") is not None
            and codec.checksum(objects.synced_object(doc)) != current.checksum
        ):
            raise LocalStoreError(
                f"{kind} {name} is managed by the principal: only its status can be set on the agent"
            )
        if status is None:
            return False
        digest = codec.checksum(status)
        if digest == current.status_checksum:
            return False
        self.db.execute(
            "UPDATE resources SET status = ?, status_checksum = ? WHERE kind = ? AND name = ?",
            (codec.canonical_json(status), digest, kind, name),
        )
        return True

    def _upsert_autonomous(
        self,
        kind: str,
        name: str,
        current: LocalResource | None,
        doc: Mapping[str, Any],
        status: Any,
    ) -> bool:
        obj = objects.synced_object(doc)
        digest, status_digest = codec.checksum(obj), codec.checksum(status)
        if (
            current is not None
            and not current.deleted
            and current.checksum == digest
            and current.status_checksum == status_digest
        ):
            return False
        version = self._next_version()
        self.db.execute(
            "INSERT INTO resources(kind, name, object, checksum, version, status, status_checksum) "
            "VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(kind, name) DO UPDATE SET object = excluded.object, "
            "checksum = excluded.checksum, version = excluded.version, status = excluded.status, "
            "status_checksum = excluded.status_checksum, deleted = 0",
            (
                kind,
                name,
                codec.canonical_json(obj),
                digest,
                version,
                None if status is None else codec.canonical_json(status),
                status_digest,
            ),
        )
        return True

    def delete_local(self, kind: str, name: str) -> bool:
        if self.mode != "autonomous":
            raise LocalStoreError(f"{kind} {name} is managed by the principal: delete it there")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            current = self.get(kind, name)
            if current is None or current.deleted:
                self.db.execute("COMMIT")
                return False
            version = self._next_version()
            self.db.execute(
                "UPDATE resources SET deleted = 1, version = ? WHERE kind = ? AND name = ?",
                (version, kind, name),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return True
