"""Snapshot of each package's public names: changing them is a deliberate act."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.unit

EXPECTED = {
    "proto": [
        "catalog",
        "codec",
        "credentials",
        "errors",
        "exposition",
        "flagtable",
        "inventory",
        "lazy",
        "limits",
        "logfields",
        "objects",
        "pb",
        "rpc",
    ],
    "agent": [
        "Agent",
        "AgentError",
        "AgentSettings",
        "AgentStore",
        "EndpointSet",
        "LocalStoreError",
        "client",
        "endpoints",
        "flags",
        "settings",
        "store",
    ],
    "principal": [
        "HubStore",
        "ModeConflictError",
        "PkiError",
        "PrincipalError",
        "PrincipalSettings",
        "Replica",
        "StoreError",
        "admission",
        "flags",
        "hub",
        "open_hub_store",
        "pki",
        "registry",
        "run",
        "server",
        "session",
        "settings",
    ],
    "mooring": [],
    "chaos": ["local"],
    "election": [
        "CompactedError",
        "ConflictError",
        "Coordinator",
        "CoordinationError",
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
    ],
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_exports(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(EXPECTED[package])
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name} is exported but missing"
