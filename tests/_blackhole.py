"""A loopback TCP proxy that can turn into a black hole, for half-open failure tests.

`BlackholeProxy(target_port).start()` listens on a free loopback port and forwards
every connection to the target. `blackhole()` stops forwarding bytes in both
directions without closing any socket: peers see silence, never a FIN or RST (what a
dropped route or a frozen middlebox looks like). New connections are still accepted
but never forwarded, so a dial completes its TCP handshake and then hangs. `heal()`
forwards again, including whatever was held back. The proxy runs its own event loop
in a thread, so a synchronous test can block freely without stalling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from mooring import _services as services

__all__ = ["BlackholeProxy"]

HOST = "127.0.0.1"
CHUNK = 64 * 1024
T = TypeVar("T")


class BlackholeProxy:
    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or services.free_port(HOST)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"proxy-{self.port}", daemon=True
        )
        self._forwarding: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False
        self.accepted = 0  # connections accepted so far

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, T], *, timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> BlackholeProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._server = await asyncio.start_server(self._handle, HOST, self.port)

    def blackhole(self) -> float:
        """Stop forwarding; returns the monotonic time the gate closed."""
        return self._call(self._set(False))

    def heal(self) -> float:
        """Forward again (held-back bytes first); returns the monotonic time."""
        return self._call(self._set(True))

    async def _set(self, forwarding: bool) -> float:
        assert self._forwarding is not None
        if forwarding:
            self._forwarding.set()
        else:
            self._forwarding.clear()
        return time.monotonic()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._forwarding is not None
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._forwarding.wait()  # a dial into the black hole hangs here
            if self._closing:
                return
            up_reader, upstream = await asyncio.open_connection(HOST, self.target_port)
            self._writers.add(upstream)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except OSError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
                    self._writers.discard(w)
            self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        assert self._forwarding is not None
        try:
            while True:
                await self._forwarding.wait()
                data = await src.read(CHUNK)
                await self._forwarding.wait()  # hold what was read while black-holed
                if not data or self._closing:
                    break
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()  # the other pump then reads EOF and ends too

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop's thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(TimeoutError):
            self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    async def _stop(self) -> None:
        # Closing the sockets ends every pump, and so every handler, on its own
        # (cancelling a handler task makes Python 3.11's asyncio log an error).
        assert self._forwarding is not None
        self._closing = True
        if self._server is not None:
            self._server.close()
        self._forwarding.set()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
