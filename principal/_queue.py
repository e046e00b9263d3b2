"""A one-consumer asyncio queue without `asyncio.Queue`'s always-allocated buffers.

An idle `asyncio.Queue` holds four deques and a few other objects, about 3 KB; a replica
keeps two per open session (its send queue and its store-change feed). This one holds a
deque only while something is queued, and one future only while its consumer waits.
Unbounded, one consumer at a time, `put_nowait` and `get` only.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

__all__ = ["LightQueue"]

T = TypeVar("T")


class LightQueue(Generic[T]):
    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[T] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item
