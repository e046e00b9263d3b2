"""Coordination: versioned-record stores, fenced leader election, membership, shard map, ring.

Consumers import the modules they use (`from election import _ring as ring`); the
names below are the stable surface.
"""

from election._cluster import Coordinator
from election._electing import Elector, Fence, FencingToken, ReplicaId
from election._errors import CompactedError, ConflictError, CoordinationError, StoreUnavailableError
from election._records import Record, RecordStore
from election._ring import Ring, assign
from election._settings import ElectionSettings
from election._shardmap import ShardMap
from election._stores import open_store

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
