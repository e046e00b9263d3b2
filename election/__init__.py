"""Coordination: versioned-record stores, fenced leader election, membership, shard map, ring.

Other packages import the names below: classes and functions, and the modules they use
by their public names (`from election import ring`, never `election._ring`). Everything
loads on first use, so importing one module of this package (the etcd adapter, say)
does not pull in the Kubernetes client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proto import lazy

if TYPE_CHECKING:
    from election import _cluster as cluster
    from election import _electing as electing
    from election import _errors as errors
    from election import _etcd as etcd
    from election import _etcdurl as etcdurl
    from election import _kubeobjects as kubeobjects
    from election import _lease as lease
    from election import _membership as membership
    from election import _ring as ring
    from election import _settings as settings
    from election import _shardmap as shardmap
    from election import _stores as stores
    from election._cluster import Coordinator
    from election._electing import Elector, Fence
    from election._errors import (
        CompactedError,
        ConflictError,
        CoordinationError,
        StoreUnavailableError,
    )
    from election._lease import FencingToken, ReplicaId
    from election._records import Record, RecordStore
    from election._ring import Ring, assign
    from election._settings import ElectionSettings
    from election._shardmap import ShardMap
    from election._stores import open_store

# Public module names: each is the private module of the same name.
_MODULES = (
    "cluster",
    "electing",
    "errors",
    "etcd",
    "etcdurl",
    "kubeobjects",
    "lease",
    "membership",
    "ring",
    "settings",
    "shardmap",
    "stores",
)

_WHERE = {
    "CompactedError": "_errors",
    "ConflictError": "_errors",
    "CoordinationError": "_errors",
    "StoreUnavailableError": "_errors",
    "Coordinator": "_cluster",
    "ElectionSettings": "_settings",
    "Elector": "_electing",
    "Fence": "_electing",
    "FencingToken": "_lease",
    "ReplicaId": "_lease",
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
    "cluster",
    "electing",
    "errors",
    "etcd",
    "etcdurl",
    "kubeobjects",
    "lease",
    "membership",
    "open_store",
    "ring",
    "settings",
    "shardmap",
    "stores",
]


__getattr__ = lazy.attributes("election", modules=_MODULES, names=_WHERE)
