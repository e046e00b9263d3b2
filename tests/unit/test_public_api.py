"""Snapshot of each package's public names: changing them is a deliberate act."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.unit

EXPECTED = {
    "proto": ["catalog", "codec", "objects", "pb", "rpc"],
    "agent": [
        "Agent",
        "AgentError",
        "AgentSettings",
        "AgentStore",
        "EndpointSet",
        "LocalStoreError",
    ],
    "principal": [
        "HubStore",
        "ModeConflictError",
        "PkiError",
        "PrincipalSettings",
        "Replica",
        "StoreError",
        "open_hub_store",
        "run",
    ],
    "mooring": [],
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
    ],
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_exports(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(EXPECTED[package])
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name} is exported but missing"
