"""The dispatcher's one watch (principal/_dispatch.py), on a fake hub and loop time: a
broken watch restarts after a capped doubling backoff, reset by the next change."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from principal import _dispatch as dispatch
from principal import _hub as hub


@dataclasses.dataclass(frozen=True)
class Change:
    agent: str
    cursor: hub.Cursor


class BrokenHub:
    """A hub whose watch breaks at once `breaks` times, then delivers `change` once and
    breaks again, at once each time. Records when each watch started (loop time) and
    after which cursor; `watched` is set at the `until`th."""

    def __init__(self, *, breaks: int, change: Change, until: int) -> None:
        self.breaks = breaks
        self.change: Change | None = change
        self.started: list[tuple[float, int]] = []
        self.until = until
        self.watched = asyncio.Event()

    async def cursor(self) -> hub.Cursor:
        return hub.Cursor(7)

    async def watch_resources(self, *, after: hub.Cursor) -> AsyncIterator[Change]:
        self.started.append((asyncio.get_running_loop().time(), after))
        if len(self.started) == self.until:
            self.watched.set()
        if self.breaks:
            self.breaks -= 1
        elif self.change is not None:
            yield self.change
            self.change = None
        raise hub.StoreError("watch broke")


async def test_a_broken_watch_restarts_with_a_capped_doubling_backoff_reset_by_a_change() -> None:
    loop = asyncio.get_running_loop()
    store = BrokenHub(breaks=8, change=Change("a", hub.Cursor(9)), until=12)
    errors: list[float] = []
    dispatcher = dispatch.Dispatcher(store, on_error=lambda: errors.append(loop.time()))  # type: ignore[arg-type]
    queue = dispatcher.subscribe("a")
    watching = asyncio.create_task(dispatcher.run())
    try:
        assert await queue.get() == Change("a", hub.Cursor(9))
        assert loop.time() == 7.15  # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 2 (the cap) + 2
        await store.watched.wait()
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
    assert store.started == [
        (0.0, 7),  # from the store's cursor at the start
        (0.05, 7),
        (0.15, 7),
        (0.35, 7),
        (0.75, 7),
        (1.55, 7),
        (3.15, 7),
        (5.15, 7),
        (7.15, 7),  # delivers the change, then breaks
        (7.2, 9),  # after the change it delivered, the delay back at its first 0.05 s
        (7.3, 9),
        (7.5, 9),
    ]
    assert errors == [0.0, 0.05, 0.15, 0.35, 0.75, 1.55, 3.15, 5.15, 7.15, 7.2, 7.3, 7.5]
