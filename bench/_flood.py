"""The attacker and the /proc sampler of `bench/bench_hardening.py`; not run by hand.

`Flood` holds connections to 127.0.0.1:PORT that send nothing (plain TCP), complete a TLS
handshake and send nothing (with or without a client certificate), or trickle a request
a byte at a time, each optionally reopened as soon as the server closes it; it records
when each was opened and when the server closed it. `Sampler` reads a process's VmRSS,
thread count (/proc/PID/status) and open file descriptors (/proc/PID/fd) every
SAMPLE_PERIOD s, beside how many connections a flood holds at that moment.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import resource
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
SAMPLE_PERIOD = 0.25
OPEN_TIMEOUT = 10.0
"""Seconds an attacker's connect (and TLS handshake) may take before it counts as failed."""
RETRY_AFTER = 0.5
"""Seconds a persistent attacker waits before it reopens a connection that failed to open
or was closed at once (beyond that, it reopens as soon as the server closes one)."""
OPEN_CONCURRENCY = 256
"""Connections being opened at once, at most."""
TRICKLE_EVERY = 1.0
"""Seconds between a trickling connection's bytes."""


def now() -> float:
    return time.monotonic()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# ----------------------------------------------------------------------------- /proc
def proc_status(pid: int, *fields: str) -> list[int] | None:
    """The first number of each named line of /proc/PID/status (VmRSS in KB, Threads)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    got = {k: v.split() for k, _, v in (line.partition(":") for line in lines)}
    if not all(got.get(f) for f in fields):
        return None
    return [int(got[f][0]) for f in fields]


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def max_open_files(pid: int) -> str:
    """The process's soft limit on open files, as /proc/PID/limits shows it."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
    except OSError:
        pass
    return "?"


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ----------------------------------------------------------------------------- flood
@dataclasses.dataclass
class Conn:
    kind: str
    generation: int  # 0 for a slot's first connection, 1 for its first reopen, ...
    opened: float
    closed: float | None = None  # when the server closed it (EOF, reset or TLS alert)


class Flood:
    """Connections held open against HOST:PORT that send nothing (or trickle a request a
    byte at a time); a slot marked `reopen` opens a new one as soon as the server closes
    its connection. `stop()` aborts them all (not counted as closed by the server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conns: list[Conn] = []
        self.held: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[tuple[str, str]] = collections.Counter()
        self.stopping = False
        self._gate = asyncio.Semaphore(OPEN_CONCURRENCY)
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def holding(self) -> int:
        return sum(self.held.values())

    async def add(
        self,
        kind: str,
        count: int,
        *,
        context: ssl.SSLContext | None = None,
        reopen: bool = True,
        trickle: bytes = b"",
    ) -> None:
        """Open `count` connections; return once each has made its first attempt."""
        firsts = [asyncio.Event() for _ in range(count)]
        for i, first in enumerate(firsts):
            self._tasks.append(
                asyncio.create_task(
                    self._slot(kind, first, context=context, reopen=reopen, trickle=trickle),
                    name=f"flood:{kind}:{i}",
                )
            )
        await asyncio.gather(*(first.wait() for first in firsts))

    async def _open(
        self, context: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self._gate, asyncio.timeout(OPEN_TIMEOUT):
            if context is None:
                return await asyncio.open_connection(HOST, self.port, limit=1 << 16)
            return await asyncio.open_connection(
                HOST,
                self.port,
                ssl=context,
                server_hostname="localhost",
                ssl_handshake_timeout=OPEN_TIMEOUT,
            )

    async def _slot(
        self,
        kind: str,
        first: asyncio.Event,
        *,
        context: ssl.SSLContext | None,
        reopen: bool,
        trickle: bytes,
    ) -> None:
        generation = 0
        while not self.stopping:
            try:
                reader, writer = await self._open(context)
            except (OSError, TimeoutError) as err:
                self.failed[kind, type(err).__name__] += 1
                first.set()
                if not reopen:
                    return
                await asyncio.sleep(RETRY_AFTER)
                continue
            conn = Conn(kind, generation, now())
            generation += 1
            self.conns.append(conn)
            self._writers.add(writer)
            self.held[kind] += 1
            first.set()
            dripping = (
                asyncio.create_task(self._drip(writer, trickle), name=f"drip:{kind}")
                if trickle
                else None
            )
            try:
                while await reader.read(1 << 16):
                    pass
            except (OSError, ssl.SSLError):
                pass
            finally:
                self.held[kind] -= 1
                self._writers.discard(writer)
                if not self.stopping:
                    conn.closed = now()
                if dripping is not None:
                    dripping.cancel()
                writer.transport.abort()
            if not reopen:
                return
            if conn.closed is not None and conn.closed - conn.opened < RETRY_AFTER:
                await asyncio.sleep(RETRY_AFTER)  # turned away at once: no busy loop

    @staticmethod
    async def _drip(writer: asyncio.StreamWriter, payload: bytes) -> None:
        with contextlib.suppress(OSError):
            for i in range(len(payload)):
                writer.write(payload[i : i + 1])
                await writer.drain()
                await asyncio.sleep(TRICKLE_EVERY)

    async def stop(self) -> None:
        self.stopping = True
        for writer in list(self._writers):
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def first_generation(self, kind: str) -> list[Conn]:
        return [c for c in self.conns if c.kind == kind and c.generation == 0]


def closed_within(conns: Sequence[Conn], seconds: float) -> int:
    return sum(1 for c in conns if c.closed is not None and c.closed - c.opened <= seconds)


def lifetimes(conns: Sequence[Conn]) -> list[float]:
    return [c.closed - c.opened for c in conns if c.closed is not None]


def tls_context(tls_dir: Path | None, ca: Path) -> ssl.SSLContext:
    """A gRPC-looking TLS client (ALPN h2): with TLS_DIR's certificate, or with none."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    if tls_dir is not None:
        context.load_cert_chain(str(tls_dir / "tls.crt"), str(tls_dir / "tls.key"))
    context.set_alpn_protocols(["h2"])
    return context


# ----------------------------------------------------------------------------- sampling
@dataclasses.dataclass
class Sample:
    t: float
    rss_kb: int
    threads: int
    fds: int
    held: int


class Sampler:
    """RSS, threads and fds of one pid and the connections a flood holds, every
    SAMPLE_PERIOD s."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[Sample] = []
        self.flood: Flood | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sampler")

    async def _run(self) -> None:
        while True:
            status, fds = proc_status(self.pid, "VmRSS", "Threads"), open_fds(self.pid)
            if status is not None and fds is not None:
                held = self.flood.holding() if self.flood is not None else 0
                self.samples.append(Sample(now(), status[0], status[1], fds, held))
            await asyncio.sleep(SAMPLE_PERIOD)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]

    def median_rss(self, start: float, end: float) -> float:
        got = self.window(start, end)
        return percentile([s.rss_kb for s in got], 0.5) if got else float("nan")
