"""The Coordinator: what one principal replica runs to take part in the control plane.

It runs three supervised, named tasks in one task group: the elector (whose leader work
keeps the shard map published), the membership heartbeat/watch, and the shard-map watcher.
Shutdown is an idempotent ladder: signal every loop to stop (the leader releases its lease
and the replica deletes its member record, so successors act at once), wait a grace period,
cancel, and log what is still stuck.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import prometheus_client

from election import _electing as electing
from election import _lease as lease
from election import _membership as membership
from election import _records as records
from election import _settings as settings_
from election import _shardmap as shardmap

__all__ = ["Coordinator"]

logger = logging.getLogger(__name__)


class Coordinator:
    """Elector + membership + shard-map watcher for one replica. Use `async with`."""

    def __init__(
        self,
        store: records.RecordStore,
        *,
        replica_id: lease.ReplicaId,
        endpoint: str,
        registry: prometheus_client.CollectorRegistry,
        settings: settings_.ElectionSettings | None = None,
        clock: lease.WallClock = lease.utc_now,
        epsilon: float = shardmap.DEFAULT_EPSILON,
        pid: int | None = None,
        metrics_address: str | None = None,
        extra: Mapping[str, Any] | None = None,
        on_map: Callable[[shardmap.ShardMap], None] | None = None,
    ) -> None:
        self.settings = settings or settings_.ElectionSettings()
        self.replica_id = replica_id
        self._store = store
        self._clock = clock
        self._epsilon = epsilon
        self.elector = electing.Elector(
            store, replica_id=replica_id, settings=self.settings, registry=registry, clock=clock
        )
        self.membership = membership.Membership(
            store,
            replica_id=replica_id,
            endpoint=endpoint,
            settings=self.settings,
            registry=registry,
            clock=clock,
            pid=pid,
            metrics_address=metrics_address,
            extra=extra,
        )
        self.maps = shardmap.MapWatcher(
            store, settings=self.settings, registry=registry, on_map=on_map
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._raised = False  # `join` raised the failure: its caller reports it, not shutdown

    # -- lifecycle --

    async def __aenter__(self) -> Coordinator:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def start(self) -> None:
        if self._task is not None or self._closed:
            raise RuntimeError("a Coordinator starts once")
        self._task = asyncio.create_task(self._run(), name=f"coordinator:{self.replica_id}")

    async def _run(self) -> None:
        work = functools.partial(
            shardmap.keep_published,
            store=self._store,
            members=self.membership,
            settings=self.settings,
            epsilon=self._epsilon,
            clock=self._clock,
            on_published=self.maps.offer,
        )
        name = self.replica_id
        async with asyncio.TaskGroup() as group:
            group.create_task(self.elector.run(work), name=f"coordinator:{name}:elector")
            group.create_task(self.membership.run(), name=f"coordinator:{name}:membership")
            group.create_task(self.maps.run(), name=f"coordinator:{name}:shardmap")

    async def join(self) -> None:
        """Wait until the coordinator stops (`shutdown` cancelling a stuck one included);
        re-raise what made it fail, if anything (then `shutdown` does not log it again)."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the caller was cancelled, not the coordinator
        except Exception:
            self._raised = True
            raise

    async def shutdown(self, *, grace: float | None = None) -> None:
        """Stop, release the lease, leave the member set; safe to call more than once."""
        self._closed = True
        task = self._task
        if task is None:
            return
        grace = self.settings.renew_deadline if grace is None else grace
        if not task.done():
            self.elector.stop()
            self.membership.stop()
            self.maps.stop()
            await asyncio.wait([task], timeout=grace)
        if not task.done():
            logger.warning(
                "coordinator: %s did not stop within %.1fs; cancelling", task.get_name(), grace
            )
            task.cancel()
            await asyncio.wait([task], timeout=grace)
        if not task.done():
            stuck = [
                t.get_name()
                for t in asyncio.all_tasks()
                if f":{self.replica_id}:" in f"{t.get_name()}:" and not t.done()
            ]
            logger.error("coordinator: still stuck after cancelling: %s", ", ".join(stuck))
            return
        if not task.cancelled() and task.exception() is not None and not self._raised:
            logger.error("coordinator: failed", exc_info=task.exception())

    # -- what the replica reads --

    def is_leader(self) -> bool:
        """True only while this replica leads within its local renew deadline (checked now)."""
        return self.elector.is_leader()

    @property
    def leader(self) -> lease.ReplicaId | None:
        return self.elector.leader

    @property
    def fencing_token(self) -> lease.FencingToken | None:
        return self.elector.fencing_token

    @property
    def fence(self) -> electing.Fence | None:
        """The current term's fence (for other leader-only writes), or None when not leading."""
        return self.elector.fence

    def live_members(self) -> list[membership.Member]:
        return self.membership.live_members()

    def is_registered(self) -> bool:
        """False once our member record could not be renewed in time: self-fence sessions."""
        return self.membership.is_registered()

    @property
    def shard_map(self) -> shardmap.ShardMap | None:
        return self.maps.current

    async def map_changed(self) -> shardmap.ShardMap:
        """Wait for the next shard map this replica applies, and return it."""
        return await self.maps.wait_changed()

    def renewed_at(self, replica_id: str) -> float | None:
        """When we last saw `replica_id` renew its member record (monotonic seconds)."""
        return self.membership.renewed_at(replica_id)

    def set_serving(self, serving: bool) -> None:
        """Say in our member record whether we can serve agents (the leader maps only
        members that can, while any can)."""
        self.membership.set_serving(serving)

    def report(self, key: str, value: Any) -> None:
        """Put `value` in our member record's extras at its next renewal (see
        `Membership.set_extra`)."""
        self.membership.set_extra(key, value)

    def set_applied_epoch(self, epoch: int) -> None:
        """Advertise in our member record that we have applied shard-map `epoch`."""
        self.membership.set_applied_epoch(epoch)
