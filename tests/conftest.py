"""Shared fixtures: real etcd and Redis processes on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mooring import _services as services


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.EtcdCluster]:
    """One real single-member etcd shared by the session; use `prefix` to isolate tests."""
    cluster = services.EtcdCluster(tmp_path_factory.mktemp("etcd"), members=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[services.EtcdCluster]:
    """A fresh real 3-member etcd cluster for one test (members may be killed)."""
    cluster = services.EtcdCluster(tmp_path / "etcd3", members=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisServer]:
    server = services.RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to one test, so tests can share one etcd."""
    return f"/t-{uuid.uuid4().hex[:10]}"
