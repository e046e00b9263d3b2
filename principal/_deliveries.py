"""What each agent last answered about each of its resources, written to the hub store.

An agent's ack of a resource event says it applied the resource at that checksum, or
refused it; `mooring app list` shows the answer as DELIVERED (yes, pending, refused).
Acks come as fast as changes are sent, so sessions only `note` them here and one task
per replica writes what is new every `FLUSH_INTERVAL` seconds, one call per agent: the
latest answer per resource wins, and a deletion's ack forgets the resource's answer.

This is a report for people, not state anything decides on: answers that cannot be
written while the store is down are kept (the newest per resource) and written later,
and those of a replica that dies before writing them are lost; the next change of the
resource, or a resync, answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from principal import _hub as hub
from proto import logfields

__all__ = ["FLUSH_INTERVAL", "DeliveryLog"]

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 2.0
"""Seconds between writes of the answers noted meanwhile. At 0.5 s the writes (one etcd
transaction per agent with news) cost bench_sync 15-25 % of its throughput, 100 agents
taking changes at once; at 2 s it is level with the code before DELIVERED existed."""
RETRY_INTERVAL = 2.0
"""Seconds before trying again after the store refused a write."""

Key = tuple[str, str]  # (kind, name)


class DeliveryLog:
    """The answers noted since the last write, and the task that writes them."""

    def __init__(
        self, desired: hub.HubStore, *, on_store_error: Callable[[], None] | None = None
    ) -> None:
        self.desired = desired
        self._due: dict[str, dict[Key, hub.Delivery | None]] = {}
        self._wake = asyncio.Event()
        self._on_store_error = on_store_error
        self._failing = False

    def note(self, agent: str, kind: str, name: str, delivery: hub.Delivery | None) -> None:
        """Record an answer (None: the deletion of the resource was applied)."""
        self._due.setdefault(agent, {})[(kind, name)] = delivery
        self._wake.set()

    def pending(self) -> int:
        """Answers noted and not yet written."""
        return sum(len(items) for items in self._due.values())

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_INTERVAL)
            if not await self.flush():
                await asyncio.sleep(RETRY_INTERVAL)

    async def flush(self) -> bool:
        """Write what is due; False when the store failed (what it did not take is kept)."""
        self._wake.clear()
        due, self._due = self._due, {}
        while due:
            agent, items = next(iter(due.items()))
            try:
                await self.desired.put_deliveries(agent, items)
            except hub.StoreError as err:
                self._keep(due)  # this agent's and the later ones: the earlier are written
                if self._on_store_error is not None:
                    self._on_store_error()
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "cannot record what agents acknowledged (kept, retrying): %s",
                        err,
                        extra=logfields.of(reason="store", error=str(err)),
                    )
                return False
            del due[agent]
        if self._failing:
            self._failing = False
            logger.info("recording what agents acknowledged again")
        return True

    def _keep(self, unwritten: dict[str, dict[Key, hub.Delivery | None]]) -> None:
        """Put back answers not written, under any newer ones noted meanwhile."""
        for agent, items in unwritten.items():
            newer = self._due.get(agent, {})
            self._due[agent] = {**items, **newer}
        self._wake.set()
