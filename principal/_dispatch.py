"""One watch on the desired-state store, fanned out to the sessions of each agent.

Sessions subscribe before they read their resync snapshot at revision R and
drop every change at or below R, so nothing falls between snapshot and watch.
The watch restarts from the last revision it delivered; when etcd has compacted
that history, every subscriber is told to resync (its session closes and the
agent's reconnect starts with a fresh resync handshake).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from election import _errors as cerrors
from principal import _queue as queue_
from principal import _store as store

__all__ = ["RESYNC", "Dispatcher"]

logger = logging.getLogger(__name__)

# Sentinel put on subscriber queues when watch history was lost.
RESYNC = object()


class Dispatcher:
    def __init__(self, desired: store.DesiredStore, *, on_error: object = None) -> None:
        self.desired = desired
        self._subscribers: dict[str, set[queue_.LightQueue[object]]] = defaultdict(set)
        self._next_revision = 0
        self._ready = asyncio.Event()
        self._retry_delay = 0.05

    @property
    def revision(self) -> int:
        return self._next_revision - 1

    def subscribe(self, agent: str) -> queue_.LightQueue[object]:
        queue: queue_.LightQueue[object] = queue_.LightQueue()
        self._subscribers[agent].add(queue)
        return queue

    def unsubscribe(self, agent: str, queue: queue_.LightQueue[object]) -> None:
        queues = self._subscribers.get(agent)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[agent]

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        """Watch forever; restart on errors with a capped backoff."""
        self._next_revision = await self.desired.kv.revision() + 1
        self._ready.set()
        delay = self._retry_delay
        while True:
            try:
                async for change in self.desired.watch_resources(
                    start_revision=self._next_revision
                ):
                    self._next_revision = change.revision + 1
                    delay = self._retry_delay
                    for queue in self._subscribers.get(change.agent, ()):
                        queue.put_nowait(change)
            except cerrors.CompactedError as err:
                logger.warning("watch history compacted; every session resyncs: %s", err)
                self._next_revision = err.compacted_revision
                for queues in list(self._subscribers.values()):
                    for queue in queues:
                        queue.put_nowait(RESYNC)
            except cerrors.CoordinationError as err:
                logger.warning("store watch broke, restarting in %.2fs: %s", delay, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
