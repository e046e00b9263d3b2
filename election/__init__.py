"""Coordination: versioned-record stores, fenced leader election, membership, shard map, ring.

Consumers import the modules they use (`from election import _ring as ring`); the
names below are the stable surface. They load on first use, so importing one module
of this package (the etcd adapter, say) does not pull in the Kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from election._cluster import Coordinator
    from election._electing import Elector, Fence, FencingToken, ReplicaId
    from election._errors import (
        CompactedError,
        ConflictError,
        CoordinationError,
        StoreUnavailableError,
    )
    from election._records import Record, RecordStore
    from election._ring import Ring, assign
    from election._settings import ElectionSettings
    from election._shardmap import ShardMap
    from election._stores import open_store

_WHERE = {
    "CompactedError": "_errors",
    "ConflictError": "_errors",
    "CoordinationError": "_errors",
    "StoreUnavailableError": "_errors",
    "Coordinator": "_cluster",
    "ElectionSettings": "_settings",
    "Elector": "_electing",
    "Fence": "_electing",
    "FencingToken": "_electing",
    "ReplicaId": "_electing",
    "Record": "_records",
    "RecordStore": "_records",
    "Ring": "_ring",
    "assign": "_ring",
    "ShardMap": "_shardmap",
    "open_store": "_stores",
}

__all__ = [
    "CompactedError",
    "ConflictError",
    "CoordinationError",
    "Coordinator",
    "ElectionSettings",
    "Elector",
    "Fence",
    "FencingToken",
    "Record",
    "RecordStore",
    "ReplicaId",
    "Ring",
    "ShardMap",
    "StoreUnavailableError",
    "assign",
    "open_store",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'election' has no attribute {name!r}")
    return getattr(importlib.import_module(f"election.{module}"), name)
