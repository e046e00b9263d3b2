"""Connections that never finish their handshakes are closed, not held forever
(issue 14: 1,500 idle TCP and 300 stalled TLS connections were held indefinitely)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from principal import _server as server
from principal import _settings as settings
from tests._procs import free_port

pytestmark = pytest.mark.integration

TIMEOUT_MS = 1_500


@pytest.fixture
async def strict_replica(
    pki_dir: Path, etcd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[server.Replica]:
    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT_MS", TIMEOUT_MS)
    listen = f"127.0.0.1:{free_port()}"
    rep = server.Replica(
        settings.PrincipalSettings(
            replica_id="strict",
            listen=listen,
            advertise=listen,
            coordination=etcd.url,
            store_root="/idle-test/",
            tls_dir=pki_dir / "principals" / "p1",
        )
    )
    await rep.start()
    try:
        yield rep
    finally:
        await rep.stop()


def closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def tls_without_preface(port: int, tls_dir: Path) -> ssl.SSLSocket:
    """A client that finishes mTLS with a valid agent certificate, then never sends the
    HTTP/2 preface: what a stalled or hostile client does."""
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(tls_dir / "tls.crt"), str(tls_dir / "tls.key"))
    context.set_alpn_protocols(["h2"])
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port)))


async def test_silent_and_half_handshaken_connections_are_dropped(
    strict_replica: server.Replica, pki_dir: Path
) -> None:
    port = strict_replica.port
    silent: list[socket.socket] = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    silent += [tls_without_preface(port, pki_dir / "agents" / "agent-a") for _ in range(5)]
    opened = time.monotonic()
    deadline = opened + TIMEOUT_MS / 1000 + 5
    results = await asyncio.to_thread(lambda: [closed_by_peer(s, deadline) for s in silent])
    assert all(results), f"{results.count(False)} silent connections still open"
    assert time.monotonic() - opened >= TIMEOUT_MS / 1000 - 0.5  # after the timeout, not at once
    for sock in silent:
        sock.close()
