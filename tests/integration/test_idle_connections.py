"""Connections that never finish their handshakes are closed, not held forever
(issue 14: 1,500 idle TCP and 300 stalled TLS connections were held indefinitely)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from principal import _agentserver as agentserver
from principal import _server as server
from tests._procs import free_port
from tests.integration._agents import serving

pytestmark = pytest.mark.integration

TIMEOUT_MS = 1_500


@pytest.fixture
async def strict_replica(
    pki_dir: Path, etcd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[server.Replica]:
    monkeypatch.setattr(agentserver, "HANDSHAKE_TIMEOUT_MS", TIMEOUT_MS)
    async with serving(pki_dir, etcd, root="/idle-test/") as rep:
        yield rep


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


async def test_connections_beyond_the_cap_are_closed_at_once_and_agents_served_after(
    pki_dir: Path, etcd, tmp_path: Path
) -> None:
    """A replica allowing 10 connections: of 30 silent ones 10 are held (until their
    handshake timeout), the other 20 closed at once; once the flood is gone a real agent
    is served."""
    from tests.integration._agents import running

    root = f"/cap-test-{time.monotonic_ns()}/"
    async with serving(pki_dir, etcd, root=root, max_connections=10, auto_register=True) as rep:
        flood = [socket.create_connection(("127.0.0.1", rep.port)) for _ in range(30)]
        try:
            await asyncio.sleep(0.5)
            soon = time.monotonic() + 0.2
            closed = await asyncio.to_thread(lambda: [closed_by_peer(s, soon) for s in flood])
            assert closed.count(True) >= 20 and closed.count(False) <= 10, closed
        finally:
            for sock in flood:
                sock.close()
        async with running(rep, "agent-a", pki_dir / "agents" / "agent-a", tmp_path / "a.db") as a:
            await asyncio.wait_for(a.welcomed.wait(), 15)


@pytest.fixture
def small_metrics_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A metrics port that lets 8 connections wait for their request, for 2 s each."""
    import prometheus_client as prom

    from proto import _exposition as exposition

    monkeypatch.setattr(exposition, "MAX_CONNECTIONS", 8)
    monkeypatch.setattr(exposition, "REQUEST_TIMEOUT", 2.0)
    port = free_port()
    metrics = exposition.serve(
        "127.0.0.1", port, registry=prom.CollectorRegistry(), ready=lambda: (True, "ok")
    )
    try:
        yield port
    finally:
        metrics.close()


def scrape(port: int, timeout: float = 1.0) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as resp:
        return int(resp.status)


def test_idle_connections_on_the_metrics_port_are_shed_oldest_first_and_scrapes_answered(
    small_metrics_port: int,
) -> None:
    """20 idle connections where 8 may wait: the 12 oldest are closed as the newer ones
    arrive (each costs a thread only while it waits), and a scrape in the middle of the
    flood is answered at once instead of being turned away."""
    import threading

    port = small_metrics_port
    before = threading.active_count()
    flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        time.sleep(0.3)
        assert threading.active_count() <= before + 8 + 2  # shed threads may still be exiting
        soon = time.monotonic() + 0.2
        shed = [i for i, s in enumerate(flood) if closed_by_peer(s, soon)]
        assert shed == list(range(12))  # the oldest, in order; the 8 newest wait
        started = time.monotonic()
        assert scrape(port) == 200
        assert time.monotonic() - started < 0.5
    finally:
        for sock in flood:
            sock.close()


def test_a_request_trickled_a_byte_at_a_time_is_cut_at_its_deadline(
    small_metrics_port: int,
) -> None:
    """The request timeout bounds the whole request, not each read: 8 clients sending one
    byte every 0.3 s (never a full request) are closed within the 2 s deadline."""
    port = small_metrics_port
    trickle = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        opened = time.monotonic()
        alive = set(range(len(trickle)))
        while alive and time.monotonic() - opened < 5.0:
            for i in sorted(alive):
                try:
                    trickle[i].send(b"G")
                except OSError:
                    alive.discard(i)
                    continue
                if closed_by_peer(trickle[i], time.monotonic() + 0.01):
                    alive.discard(i)
            time.sleep(0.3)
        lasted = time.monotonic() - opened
        assert not alive, f"{len(alive)} trickling connections still open after {lasted:.1f}s"
        assert lasted < 2.0 + 1.0
        assert scrape(port) == 200
    finally:
        for sock in trickle:
            sock.close()
