"""One watch on the desired-state store, fanned out to the sessions of each agent.

Sessions subscribe before they read their resync snapshot at cursor C and drop
every change at or before C, so nothing falls between snapshot and watch. The
watch restarts after the last change it delivered; when the store has lost that
history, every subscriber is told to resync (its session closes and the agent's
reconnect starts with a fresh resync handshake).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from principal import _hub as hub
from principal import _queue as queue_
from proto import logfields

__all__ = ["RESYNC", "Dispatcher"]

logger = logging.getLogger(__name__)

# Sentinel put on subscriber queues when watch history was lost.
RESYNC = object()


class Dispatcher:
    def __init__(
        self, desired: hub.HubStore, *, on_error: Callable[[], None] | None = None
    ) -> None:
        self.desired = desired
        self._on_error = on_error  # each broken watch (counted as a store error)
        self._subscribers: dict[str, set[queue_.LightQueue[object]]] = defaultdict(set)
        self._cursor = hub.Cursor(0)
        self._started = False
        self._retry_delay = 0.05

    @property
    def cursor(self) -> hub.Cursor:
        """Where the watch stands: the last change delivered (or the start)."""
        return self._cursor

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

    async def start(self) -> None:
        """Read where the watch starts: the store's cursor now (StoreError if it cannot)."""
        self._cursor = await self.desired.cursor()
        self._started = True

    async def run(self) -> None:
        """Watch forever (from `start`'s cursor, read first if it was not); restart the watch
        on store errors with a capped backoff. Any other error ends the run, and a later run
        (its supervisor's restart: principal/_supervise.py) resumes after the last change
        it read."""
        if not self._started:
            await self.start()
        delay = self._retry_delay
        while True:
            try:
                async for change in self.desired.watch_resources(after=self._cursor):
                    self._cursor = change.cursor
                    delay = self._retry_delay
                    for queue in self._subscribers.get(change.agent, ()):
                        queue.put_nowait(change)
            except hub.HistoryLostError as err:
                logger.warning(
                    "watch history lost; every session resyncs: %s",
                    err,
                    extra=logfields.of(reason="history_lost", error=str(err)),
                )
                self._cursor = err.resume
                for queues in list(self._subscribers.values()):
                    for queue in queues:
                        queue.put_nowait(RESYNC)
            except hub.StoreError as err:
                if self._on_error is not None:
                    self._on_error()
                logger.warning(
                    "store watch broke, restarting in %.2fs: %s",
                    delay,
                    err,
                    extra=logfields.of(reason="store", error=str(err)),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
