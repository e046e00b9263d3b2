"""A replica or an agent that cannot start says in one line which store or address it
could not use, and exits 1: real `mooring` processes (gRPC's C core writes to the same
stderr), a real etcd, real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mooring import _services as services
from tests import _procs as procs

pytestmark = pytest.mark.integration


def fails(*argv: str) -> str:
    """The one line `mooring ARGV` prints on stderr as it exits 1 (logs only at ERROR)."""
    result = procs.mooring("--log-level", "ERROR", *argv, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def serve(pki_dir: Path, *flags: str) -> list[str]:
    tls = pki_dir / "principals" / "p1"
    return ["principal", "serve", "--id", "p1", "--tls-dir", str(tls), *flags]


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_an_unreachable_coordination_store_is_named(pki_dir: Path) -> None:
    url = f"etcd://127.0.0.1:{procs.free_port()}"  # nothing listens there
    flags = ["--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:9", "--coordination", url]
    line = fails(*serve(pki_dir, *flags))
    assert line.startswith(f"mooring: error: cannot reach the coordination store {url} ("), line


def test_an_unreachable_hub_store_is_named(
    pki_dir: Path, etcd: services.EtcdCluster, prefix: str
) -> None:
    url = f"etcd://127.0.0.1:{procs.free_port()}"
    flags = ["--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:9", "--store-root", f"{prefix}/"]
    line = fails(*serve(pki_dir, *flags, "--coordination", etcd.url, "--store", url))
    assert line.startswith(f"mooring: error: cannot reach the hub store {url} ("), line


@pytest.mark.parametrize(
    ("flag", "purpose"),
    [("--listen", "agents"), ("--metrics", "metrics"), ("--health", "health probes")],
)
def test_an_address_in_use_is_named(
    flag: str,
    purpose: str,
    taken: int,
    pki_dir: Path,
    etcd: services.EtcdCluster,
    prefix: str,
) -> None:
    address = f"127.0.0.1:{taken}"
    flags = ["--coordination", etcd.url, "--store-root", f"{prefix}/"]
    if flag != "--listen":
        flags += ["--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:9"]
    line = fails(*serve(pki_dir, *flags, flag, address))
    assert (
        line == f"mooring: error: cannot listen on {address} for {purpose}: address already in use"
    )


def test_an_agents_metrics_address_in_use_is_named(
    taken: int, pki_dir: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{taken}"
    argv = ["agent", "run", "--name", "steady", "--mode", "managed"]
    argv += ["--tls-dir", str(pki_dir / "agents" / "steady"), "--state", str(tmp_path / "a.db")]
    argv += ["--endpoints", f"127.0.0.1:{procs.free_port()}", "--metrics", address]
    line = fails(*argv)
    assert line == f"mooring: error: cannot listen on {address} for metrics: address already in use"
