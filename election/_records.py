"""The versioned-record store contract that every coordination adapter implements.

A record is a small JSON object (Lease-like fields) under a name, with an opaque
version token that changes on every write (etcd mod_revision, Kubernetes
resourceVersion, a counter in memory). Writes are compare-and-swap on that token.
Every method is bounded by the adapter's request timeout and raises only
`election._errors` exceptions: `ConflictError` when a compare-and-swap loses or a
create finds the name taken, `StoreUnavailableError` when the store does not answer.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Record", "RecordStore", "format_time"]


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    name: str
    data: Mapping[str, Any]
    version: str


class RecordStore(Protocol):
    """Get / create / compare-and-swap update / delete / list over named records."""

    async def get(self, name: str) -> Record | None: ...

    async def create(self, name: str, data: Mapping[str, Any]) -> Record: ...

    async def update(self, record: Record, data: Mapping[str, Any]) -> Record: ...

    async def delete(self, record: Record) -> None: ...

    async def list(self, prefix: str = "") -> list[Record]: ...

    async def close(self) -> None: ...


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with microseconds (Kubernetes MicroTime): how records stamp times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
