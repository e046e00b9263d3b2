"""The store harness the conformance suite runs on (shared by conftest and the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence

from election import _memory as memory
from election import _stores as stores


@dataclasses.dataclass(frozen=True)
class Isolated:
    """A client whose own traffic alone can be stalled: `stall(True)` partitions it."""

    store: stores.FencedRecordStore
    stall: Callable[[bool], None]


class StallingProxy:
    """A loopback TCP forwarder to `target` ("host:port") that can stall one client.

    While stalled, bytes are held in both directions (a partition of that client only);
    unstalled, whatever was held is delivered late, in order. Closing drops what is held.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen on a free loopback port; return the address that clients should dial."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    def stall(self, stalled: bool) -> None:
        if stalled:
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.append(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.append(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class StoreHarness:
    """Opens stores of one kind over one shared backend, and can make that backend hang.

    With `targets` (the backend's "host:port" addresses) and `open_via` (open a store that
    dials the given addresses instead), `open_isolated` puts a `StallingProxy` in front of
    one client; without them the store kind must be in-process (`MemoryStore`).
    """

    def __init__(
        self,
        kind: str,
        *,
        opener: Callable[[float], stores.FencedRecordStore],
        hang: Callable[[bool], None],
        timeout: float = 5.0,
        targets: Sequence[str] = (),
        open_via: Callable[[float, Sequence[str]], stores.FencedRecordStore] | None = None,
    ) -> None:
        self.kind = kind
        self.timeout = timeout
        self.opened: list[stores.FencedRecordStore] = []
        self._opener = opener
        self._hang = hang
        self._targets = list(targets)
        self._open_via = open_via
        self._proxies: list[StallingProxy] = []

    def open(self, *, timeout: float | None = None) -> stores.FencedRecordStore:
        """A new client (its own connection) on the harness's backend."""
        store = self._opener(self.timeout if timeout is None else timeout)
        self.opened.append(store)
        return store

    async def open_isolated(self, *, store_timeout: float | None = None) -> Isolated:
        """A new client whose requests alone can be made to hang (the backend carries on);
        `store_timeout` bounds each of its calls, like `open(timeout=...)`."""
        timeout = self.timeout if store_timeout is None else store_timeout
        if self._open_via is None:
            store = self.open(timeout=timeout)
            if not isinstance(store, memory.MemoryStore):
                raise TypeError(f"{self.kind} stores cannot be isolated: no targets to proxy")
            view = store

            def stall_view(stalled: bool) -> None:
                view.hang = stalled

            return Isolated(store, stall_view)
        proxies = [StallingProxy(target) for target in self._targets]
        self._proxies.extend(proxies)
        addresses = [await proxy.start() for proxy in proxies]
        store = self._open_via(timeout, addresses)
        self.opened.append(store)

        def stall_proxies(stalled: bool) -> None:
            for proxy in proxies:
                proxy.stall(stalled)

        return Isolated(store, stall_proxies)

    @contextlib.contextmanager
    def hanging(self) -> Iterator[None]:
        """Every request to the backend stalls while inside."""
        self._hang(True)
        try:
            yield
        finally:
            self._hang(False)

    async def aclose(self) -> None:
        for store in self.opened:
            await store.close()
        for proxy in self._proxies:
            await proxy.close()
