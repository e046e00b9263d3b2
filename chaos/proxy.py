"""A userspace TCP proxy that adds latency and caps bandwidth (this kernel has no tc netem).

One listening address forwards to one target. Each direction (`to_target`: what clients
send, `to_client`: what the target answers) has its own `Shaping`: an added delay in ms
with optional uniform jitter, and a bandwidth cap in bytes/s enforced by a token bucket
that all connections through the proxy share (a link's capacity, not a per-connection
quota). Limits can change at any time; a new delay applies to bytes read after the
change, a new rate at once.

Every chunk read is stamped with the time it may leave (read time + delay, never earlier
than the chunk before it), queued, and written by a second task when due: a stream's
bytes keep their order, a delay pipelines instead of stalling the reader (like a long
link, not a slow one), and each connection has its own pair of tasks, so connections
never wait on each other. A full queue (64 reads, at most 4 MiB, per direction and
connection) stops reading, so TCP backpressure reaches the sender. EOF is forwarded
(half-close) after the data before it; a reset on either side closes both. The TCP
handshake itself is not delayed, only the bytes; a target that cannot be reached closes
the accepted client connection (the client sees EOF, not a refusal).

As a process, for experiments:

    python3 -m chaos.proxy --listen 127.0.0.1:7001 --target 127.0.0.1:6379 --control redis.json

The control file is JSON, re-read whenever it changes (polled every 0.1 s; write it with
`write_control`, which replaces it atomically); a missing file means no shaping, a broken
one is logged and the previous limits stay. Top-level fields apply to both directions,
per-direction objects override them:

    {"delay_ms": 50, "to_client": {"rate": 100000}}

After every change it applied (and once at start) the proxy writes `<control>.status`
(JSON: pid, listen, target, limits), so an experiment can wait until its change is in
force (`wait_applied`). SIGTERM or SIGINT closes the listener and every connection, and
the process exits 0.

In-process (tests): `async with Proxy(listen="127.0.0.1:0", target=...) as proxy:` then
`proxy.address`, `proxy.limits = Limits(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "Limits",
    "Proxy",
    "Shaping",
    "main",
    "parse_hostport",
    "read_status",
    "status_path",
    "wait_applied",
    "write_control",
]

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024  # bytes read at once
QUEUE_CHUNKS = 64  # chunks in flight per direction per connection before reading stops
CONNECT_TIMEOUT = 10.0  # seconds to reach the target
POLL_INTERVAL = 0.1  # seconds between looks at the control file
MIN_BURST, MAX_BURST = 1024, 64 * 1024  # bytes; the default burst is rate / 20 within these
TO_TARGET, TO_CLIENT = "to_target", "to_client"
DIRECTIONS = (TO_TARGET, TO_CLIENT)


@dataclasses.dataclass(frozen=True)
class Shaping:
    """One direction's impairment."""

    delay_ms: float = 0.0  # ms added to every byte
    jitter_ms: float = 0.0  # ms; each chunk's delay is uniform in delay +- jitter (>= 0)
    rate: float | None = None  # bytes/s; None: unlimited
    burst: int | None = None  # bytes the bucket holds; None: rate / 20 in [1 KiB, 64 KiB]

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"delay_ms and jitter_ms must be >= 0: {self}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 bytes/s or None: {self}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1 byte or None: {self}")

    @property
    def bucket_size(self) -> int:
        if self.burst is not None:
            return self.burst
        rate = self.rate or 0.0
        return int(min(MAX_BURST, max(MIN_BURST, rate / 20)))


@dataclasses.dataclass(frozen=True)
class Limits:
    """Both directions' impairments."""

    to_target: Shaping = Shaping()
    to_client: Shaping = Shaping()

    @classmethod
    def both(cls, **fields: Any) -> Limits:
        """The same Shaping each way: `Limits.both(delay_ms=50)`."""
        return cls(Shaping(**fields), Shaping(**fields))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Limits:
        """Parse the control file's object; unknown keys are a ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"limits must be a JSON object, not {type(data).__name__}")
        shaping_keys = {f.name for f in dataclasses.fields(Shaping)}
        unknown = set(data) - shaping_keys - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; known: {sorted(shaping_keys)}")
        common = {k: v for k, v in data.items() if k in shaping_keys}
        directions: dict[str, Shaping] = {}
        for direction in DIRECTIONS:
            own = data.get(direction, {})
            if not isinstance(own, Mapping) or set(own) - shaping_keys:
                raise ValueError(f"{direction} must be an object with keys {sorted(shaping_keys)}")
            fields = {**common, **own}
            for key, value in fields.items():
                if isinstance(value, bool) or not isinstance(value, int | float | None):
                    raise ValueError(f"{direction}.{key} must be a number, not {value!r}")
            directions[direction] = Shaping(**fields)
        return cls(**directions)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Bucket:
    """A token bucket shared by one direction's connections; debt makes takers queue."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._stamp: float | None = None

    async def take(self, n: int, shaping: Shaping) -> None:
        rate = shaping.rate
        if rate is None:
            self._stamp = None  # unlimited: a later cap starts with a full bucket
            return
        now = asyncio.get_running_loop().time()
        size = shaping.bucket_size
        if self._stamp is None:
            self._tokens = float(size)
        else:
            self._tokens = min(float(size), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        self._tokens -= n
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / rate)


async def _close(*writers: asyncio.StreamWriter) -> None:
    """Close gracefully (what is buffered is still sent), bounded by CONNECT_TIMEOUT."""
    for writer in writers:
        writer.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CONNECT_TIMEOUT):
            for writer in writers:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class Proxy:
    """One listener forwarding to one target, shaping both directions."""

    def __init__(
        self,
        *,
        listen: str | tuple[str, int],
        target: str | tuple[str, int],
        limits: Limits | None = None,
        seed: int | None = None,
    ) -> None:
        self._listen = parse_hostport(listen) if isinstance(listen, str) else listen
        self.target = parse_hostport(target) if isinstance(target, str) else target
        self._limits = limits or Limits()
        self._random = random.Random(seed)
        self._buckets = {direction: _Bucket() for direction in DIRECTIONS}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.accepted = 0  # connections accepted so far

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        if limits != self._limits:
            logger.info("proxy %s: limits %s", self.address_text, limits.to_json())
        self._limits = limits

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port once started, when asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._listen
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def address_text(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._connections)

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, *self._listen, limit=CHUNK)
        logger.info(
            "proxy listening on %s -> %s:%d", self.address_text, self.target[0], self.target[1]
        )
        return self

    async def stop(self) -> None:
        """Close the listener and every connection. Idempotent."""
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.accepted += 1
        peer = client_w.get_extra_info("peername")
        opened = [client_w]
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    target_r, target_w = await asyncio.open_connection(*self.target, limit=CHUNK)
                opened.append(target_w)
            except (OSError, TimeoutError) as err:
                logger.warning("proxy %s: target unreachable: %s", self.address_text, err)
                return
            for writer in opened:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pipe(client_r, target_w, TO_TARGET))
                    group.create_task(self._pipe(target_r, client_w, TO_CLIENT))
            except* OSError as errors:
                logger.debug("proxy %s: %s reset: %s", self.address_text, peer, errors.exceptions)
            else:  # both sides sent EOF: flush what is left, then close
                await _close(client_w, target_w)
        finally:
            for writer in opened:
                writer.transport.abort()  # a no-op once closed
            self._connections.discard(task)

    def _due(self, direction: str, now: float) -> float:
        shaping: Shaping = getattr(self._limits, direction)
        delay = shaping.delay_ms
        if shaping.jitter_ms:
            delay = max(0.0, delay + self._random.uniform(-shaping.jitter_ms, shaping.jitter_ms))
        return now + delay / 1000.0

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        """Copy one direction: a reader stamps chunks with their due time, a writer sends."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def read() -> None:
            last = 0.0
            while True:
                chunk = await reader.read(CHUNK)
                last = max(last, self._due(direction, loop.time()))
                await queue.put((last, chunk))
                if not chunk:
                    return

        async def write() -> None:
            bucket = self._buckets[direction]
            while True:
                due, chunk = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                view = memoryview(chunk)
                while view:
                    shaping: Shaping = getattr(self._limits, direction)
                    piece = view[: shaping.bucket_size] if shaping.rate else view
                    await bucket.take(len(piece), shaping)
                    writer.write(piece)
                    await writer.drain()
                    view = view[len(piece) :]

        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            group.create_task(write())


# --- the control file ----------------------------------------------------------------


def status_path(control: Path) -> Path:
    """Where the proxy following this control file reports what it applied."""
    return control.with_name(control.name + ".status")


def write_control(path: str | os.PathLike[str], limits: Limits) -> None:
    """Replace the control file atomically, so the proxy never reads half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(limits.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def read_status(control: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the proxy last applied (None before it started)."""
    try:
        data = json.loads(status_path(Path(control)).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def wait_applied(
    control: str | os.PathLike[str], limits: Limits, *, timeout: float = 5.0
) -> dict[str, Any]:
    """Block until the proxy's status shows these limits; TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(control)
        if status is not None and status.get("limits") == limits.to_json():
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy did not apply {limits.to_json()} within {timeout}s")
        time.sleep(0.02)


def _write_status(control: Path, proxy: Proxy) -> None:
    data = {
        "pid": os.getpid(),
        "listen": proxy.address_text,
        "target": f"{proxy.target[0]}:{proxy.target[1]}",
        "limits": proxy.limits.to_json(),
    }
    path = status_path(control)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_control(control: Path) -> Limits:
    try:
        text = control.read_text()
    except FileNotFoundError:
        return Limits()
    return Limits.from_json(json.loads(text))


def _identity(control: Path) -> tuple[int, int, int]:
    """What changes when the file is replaced or rewritten: inode, mtime, size."""
    try:
        st = control.stat()
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


async def _follow(control: Path, proxy: Proxy, stop: asyncio.Event) -> None:
    """Re-read the control file whenever its identity or contents change."""
    seen: tuple[int, int, int] | None = None
    while not stop.is_set():
        stamp = _identity(control)
        if stamp != seen:
            seen = stamp
            try:
                proxy.limits = _read_control(control)
            except (OSError, ValueError, TypeError) as err:
                logger.error("proxy: control file %s ignored: %s", control, err)
            else:
                _write_status(control, proxy)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_INTERVAL)


async def _run(args: argparse.Namespace) -> None:
    control = Path(args.control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    proxy = Proxy(listen=args.listen, target=args.target, seed=args.seed)
    proxy.limits = _read_control(control)  # a broken file at start is an error
    async with proxy:
        await _follow(control, proxy, stop)
        logger.info("proxy %s: stopping (%d connections)", proxy.address_text, proxy.connections)
    logger.info("proxy stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m chaos.proxy", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0: any)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--control", required=True, help="JSON file with the limits, re-read")
    parser.add_argument("--seed", type=int, default=None, help="jitter's random seed")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        parse_hostport(args.listen)
        parse_hostport(args.target)
        asyncio.run(_run(args))
    except (ValueError, OSError) as err:
        print(f"chaos.proxy: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
