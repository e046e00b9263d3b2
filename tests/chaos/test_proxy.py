"""chaos.proxy on loopback: added latency and jitter within bounds, a bandwidth cap within
30 %, limits changed at runtime through the control file of a real `python3 -m
chaos.proxy` process, byte streams intact under load, connections not serialized, and a
clean exit on SIGTERM.

Timings are measured against a baseline taken through the same proxy without shaping;
waits poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chaos import proxy as chaosproxy
from chaos.proxy import Limits, Shaping
from tests._poll import eventually

pytestmark = pytest.mark.chaos

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, int]]:
    server = await asyncio.start_server(handler, HOST, 0)
    try:
        yield HOST, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def connected(address: tuple[str, int]) -> AsyncIterator[tuple[Any, Any]]:
    reader, writer = await asyncio.open_connection(*address)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def rtts(address: tuple[str, int], *, n: int = 7) -> list[float]:
    """Round trips of one small message each on one connection, in seconds."""
    async with connected(address) as (reader, writer):
        times = []
        for _ in range(n):
            start = time.monotonic()
            writer.write(b"x" * 16)
            await writer.drain()
            assert await reader.readexactly(16) == b"x" * 16
            times.append(time.monotonic() - start)
        return times


@pytest.mark.parametrize(
    ("to_target", "to_client"),
    [(Shaping(delay_ms=100), Shaping()), (Shaping(delay_ms=50), Shaping(delay_ms=50))],
    ids=["one-way-100ms", "50ms-each-way"],
)
async def test_added_latency_within_bounds(to_target: Shaping, to_client: Shaping) -> None:
    async with serving(echo) as target, chaosproxy.Proxy(listen=(HOST, 0), target=target) as px:
        baseline = statistics.median(await rtts(px.address))
        px.limits = Limits(to_target=to_target, to_client=to_client)
        added = statistics.median(await rtts(px.address)) - baseline
    assert 0.090 <= added <= 0.250, f"added {added * 1000:.1f} ms for 100 ms set"


async def test_jitter_varies_delay_within_its_range() -> None:
    limits = Limits(to_target=Shaping(delay_ms=100, jitter_ms=40))
    async with (
        serving(echo) as target,
        chaosproxy.Proxy(listen=(HOST, 0), target=target, limits=limits, seed=7) as px,
    ):
        samples = await rtts(px.address, n=12)
    assert 0.055 <= min(samples) and max(samples) <= 0.250, samples
    assert max(samples) - min(samples) >= 0.020, samples  # it does vary


async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends the number of bytes the client asks for (8 ASCII digits), then closes."""
    size = int(await reader.readexactly(8))
    block = b"s" * 65536
    while size > 0:
        writer.write(block[: min(size, len(block))])
        size -= len(block)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads until EOF, then answers how many bytes it got."""
    total = 0
    while data := await reader.read(65536):
        total += len(data)
    writer.write(b"%d" % total)
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("direction", ["to_client", "to_target"])
async def test_bandwidth_cap_within_30_percent(direction: str) -> None:
    rate, size = 1_000_000, 1_500_000  # bytes/s, bytes: about 1.5 s
    limits = Limits(**{direction: Shaping(rate=rate)})
    handler = source if direction == "to_client" else sink
    async with (
        serving(handler) as target,
        chaosproxy.Proxy(listen=(HOST, 0), target=target, limits=limits) as px,
        connected(px.address) as (reader, writer),
    ):
        start = time.monotonic()
        if direction == "to_client":
            writer.write(b"%08d" % size)
            received = len(await reader.read(-1))
        else:
            block = b"u" * 65536
            for offset in range(0, size, len(block)):
                writer.write(block[: size - offset])
                await writer.drain()
            writer.write_eof()
            received = int(await reader.read(-1))
        elapsed = time.monotonic() - start
    assert received == size
    measured = size / elapsed
    assert 0.7 * rate <= measured <= 1.3 * rate, f"{measured:.0f} B/s for a cap of {rate}"


async def test_bandwidth_cap_is_shared_by_connections() -> None:
    """The cap is the link's: three downloads at once share it, each gets about a third."""
    rate, size = 1_000_000, 500_000

    async def download(address: tuple[str, int]) -> float:
        async with connected(address) as (reader, writer):
            start = time.monotonic()
            writer.write(b"%08d" % size)
            assert len(await reader.read(-1)) == size
            return time.monotonic() - start

    limits = Limits(to_client=Shaping(rate=rate))
    async with (
        serving(source) as target,
        chaosproxy.Proxy(listen=(HOST, 0), target=target, limits=limits) as px,
    ):
        start = time.monotonic()
        each = await asyncio.gather(*(download(px.address) for _ in range(3)))
        elapsed = time.monotonic() - start
    measured = 3 * size / elapsed
    assert 0.7 * rate <= measured <= 1.3 * rate, f"{measured:.0f} B/s for a cap of {rate}"
    assert min(each) >= 0.7 * elapsed, each  # interleaved, not one after the other


async def test_byte_streams_intact_under_load() -> None:
    """Eight connections at once, 2 MiB each way, with jitter: every byte back, in order."""
    limits = Limits.both(delay_ms=5, jitter_ms=5)
    payloads = [os.urandom(2 * 1024 * 1024) for _ in range(8)]

    async def roundtrip(address: tuple[str, int], payload: bytes) -> bytes:
        async with connected(address) as (reader, writer):

            async def send() -> None:
                view = memoryview(payload)
                for offset in range(0, len(payload), 50_000):
                    writer.write(view[offset : offset + 50_000])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            data = await reader.read(-1)
            await sender
            return data

    async with (
        serving(echo) as target,
        chaosproxy.Proxy(listen=(HOST, 0), target=target, limits=limits, seed=1) as px,
    ):
        async with asyncio.timeout(30):
            echoed = await asyncio.gather(*(roundtrip(px.address, p) for p in payloads))

        await eventually(
            lambda: px.connections,
            until=lambda open_: open_ == 0,
            what="the proxy to close every connection",
        )
    for sent, got in zip(payloads, echoed, strict=True):
        assert len(got) == len(sent)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(sent).hexdigest()


async def test_connections_are_not_serialized() -> None:
    limits = Limits(to_target=Shaping(delay_ms=300))
    async with (
        serving(echo) as target,
        chaosproxy.Proxy(listen=(HOST, 0), target=target, limits=limits) as px,
    ):
        start = time.monotonic()
        each = await asyncio.gather(*(rtts(px.address, n=1) for _ in range(10)))
        elapsed = time.monotonic() - start
    assert all(0.29 <= t[0] for t in each), each
    assert elapsed < 0.8, f"10 connections with 300 ms each took {elapsed:.2f} s (serial: 3 s)"


def test_limits_from_json() -> None:
    limits = Limits.from_json({"delay_ms": 50, "to_client": {"rate": 1000, "delay_ms": 0}})
    assert limits == Limits(Shaping(delay_ms=50), Shaping(delay_ms=0, rate=1000))
    assert Limits.from_json(limits.to_json()) == limits
    assert Limits.from_json({}) == Limits()
    for bad in ({"delay": 5}, {"to_client": {"rate": "fast"}}, {"jitter_ms": -1}, []):
        with pytest.raises(ValueError):
            Limits.from_json(bad)  # type: ignore[arg-type]


async def test_process_follows_control_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    control = tmp_path / "link.json"
    log = (tmp_path / "proxy.log").open("w")
    async with serving(echo) as target:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "chaos.proxy", "--listen", f"{HOST}:0"),
            *("--target", f"{target[0]}:{target[1]}", "--control", str(control)),
            cwd=ROOT,
            stderr=log,
        )
        try:
            status = await eventually(
                lambda: chaosproxy.read_status(control),
                until=lambda got: got is not None,
                what="the proxy's status file",
            )
            assert status is not None and status["pid"] == proc.pid
            address = chaosproxy.parse_hostport(status["listen"])
            baseline = statistics.median(await rtts(address))

            slow = Limits(to_client=Shaping(delay_ms=150))
            chaosproxy.write_control(control, slow)
            await asyncio.to_thread(chaosproxy.wait_applied, control, slow)
            added = statistics.median(await rtts(address)) - baseline
            assert 0.135 <= added <= 0.300, f"added {added * 1000:.1f} ms for 150 ms set"

            control.write_text("{not json")  # ignored, logged; the limits stay

            await eventually(
                (tmp_path / "proxy.log").read_text,
                until=lambda log: "ignored" in log,
                what="the proxy to reject the broken file",
            )
            assert proc.returncode is None
            assert chaosproxy.read_status(control)["limits"] == slow.to_json()  # type: ignore[index]
            chaosproxy.write_control(control, Limits())
            await asyncio.to_thread(chaosproxy.wait_applied, control, Limits())
            assert statistics.median(await rtts(address)) - baseline < 0.05

            async with connected(address) as (reader, _):
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    assert await reader.read() == b""  # the open connection is closed
                    assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            log.close()
    text = (tmp_path / "proxy.log").read_text()
    assert "control file" in text and "ignored" in text, text
    assert "proxy stopped" in text, text
    assert json.loads(control.read_text()) == Limits().to_json()
