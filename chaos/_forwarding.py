"""The proxy's forwarding: one listener, one target, and per connection a reader and a
writer task for each direction that delay and pace its bytes as `Limits` say.

Every chunk read is stamped with the time it may leave (read time + delay, never earlier
than the chunk before it), queued, and written by the second task when due, taking its
bytes from the direction's shared token bucket (`chaos/_impairment.py`). The process
around it, which follows a control file, is `chaos.proxy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from types import TracebackType
from typing import Any

from chaos import _impairment as impairment

__all__ = ["CONNECT_TIMEOUT", "Proxy", "parse_hostport"]

logger = logging.getLogger("chaos.proxy")  # the name the proxy logs under, in-process

CHUNK = 64 * 1024  # bytes read at once
QUEUE_CHUNKS = 64  # chunks in flight per direction per connection before reading stops
CONNECT_TIMEOUT = 10.0  # seconds to reach the target


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
        limits: impairment.Limits | None = None,
        seed: int | None = None,
    ) -> None:
        self._listen = parse_hostport(listen) if isinstance(listen, str) else listen
        self.target = parse_hostport(target) if isinstance(target, str) else target
        self._limits = limits or impairment.Limits()
        self._random = random.Random(seed)
        self._buckets = {direction: impairment.Bucket() for direction in impairment.DIRECTIONS}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.accepted = 0  # connections accepted so far

    @property
    def limits(self) -> impairment.Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: impairment.Limits) -> None:
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
                    group.create_task(self._pipe(client_r, target_w, impairment.TO_TARGET))
                    group.create_task(self._pipe(target_r, client_w, impairment.TO_CLIENT))
            except* OSError as errors:
                logger.debug("proxy %s: %s reset: %s", self.address_text, peer, errors.exceptions)
            else:  # both sides sent EOF: flush what is left, then close
                await _close(client_w, target_w)
        finally:
            for writer in opened:
                writer.transport.abort()  # a no-op once closed
            self._connections.discard(task)

    def _due(self, direction: str, now: float) -> float:
        shaping: impairment.Shaping = getattr(self._limits, direction)
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
                    shaping: impairment.Shaping = getattr(self._limits, direction)
                    piece = view[: shaping.bucket_size] if shaping.rate else view
                    await bucket.take(len(piece), shaping)
                    writer.write(piece)
                    await writer.drain()
                    view = view[len(piece) :]

        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            group.create_task(write())
