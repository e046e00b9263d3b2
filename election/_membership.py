"""Membership: every replica keeps its own member record alive and watches everyone's.

A member record (`members/<replica id>`) carries the replica's advertised endpoint, the
shard-map epoch it has applied, its pid and metrics address, and free-form extras. It is
rewritten every `settings.member_heartbeat` seconds (and at once when the applied epoch
changes). A member is *live* while its record has been seen to change within
`lease_duration`, judged on the local monotonic clock by when *we* saw each version, never by
the writer's timestamp. A replica that stops gracefully deletes its record, so it leaves the
live set at once. A replica that is alive but cannot serve agents (its session registry
is unreachable) says so in its record (`serving: false` among the extras): it stays a
member, and the leader leaves it out of the shard map until it can serve again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import random
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import prometheus_client

from election import _errors as errors
from election import _lease as lease
from election import _records as records
from election import _settings as settings_
from proto import catalog

__all__ = ["MEMBER_PREFIX", "Member", "Membership", "member_record_name"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MEMBER_PREFIX = "members/"

# Member record fields.
REPLICA_ID = "replicaId"
ENDPOINT = "endpoint"
APPLIED_EPOCH = "appliedEpoch"
PID = "pid"
METRICS = "metrics"
EXTRA = "extra"
RENEW_TIME = "renewTime"
HEARTBEAT = "heartbeat"
SERVING = "serving"  # among the extras: false while the replica cannot serve agents
SESSIONS = "sessions"  # among the extras: {"count": N, "agents": [...]} it serves (principal)


def member_record_name(replica_id: str) -> str:
    return f"{MEMBER_PREFIX}{replica_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One replica as its member record describes it."""

    replica_id: lease.ReplicaId
    endpoint: str
    applied_epoch: int = 0
    pid: int | None = None
    metrics: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def serving(self) -> bool:
        """False while the replica says it cannot serve agents (see `set_serving`)."""
        return self.extra.get(SERVING) is not False

    @classmethod
    def from_record(cls, record: records.Record) -> Member | None:
        """The member a record describes, or None when the record is malformed."""
        data = record.data
        replica_id = data.get(REPLICA_ID)
        endpoint = data.get(ENDPOINT)
        if not isinstance(replica_id, str) or not replica_id or not isinstance(endpoint, str):
            return None
        epoch, pid, metrics, extra = (data.get(k) for k in (APPLIED_EPOCH, PID, METRICS, EXTRA))
        return cls(
            replica_id=lease.ReplicaId(replica_id),
            endpoint=endpoint,
            applied_epoch=epoch if isinstance(epoch, int) else 0,
            pid=pid if isinstance(pid, int) else None,
            metrics=metrics if isinstance(metrics, str) else None,
            extra=dict(extra) if isinstance(extra, dict) else {},
        )


@dataclasses.dataclass(slots=True)
class _Seen:
    version: str
    at: float  # loop time at which we first saw this version
    member: Member


class Membership:
    """Keeps this replica's member record alive and tracks the live set of all members."""

    def __init__(
        self,
        store: records.RecordStore,
        *,
        replica_id: lease.ReplicaId,
        endpoint: str,
        settings: settings_.ElectionSettings,
        registry: prometheus_client.CollectorRegistry | None = None,
        clock: lease.WallClock = lease.utc_now,
        pid: int | None = None,
        metrics_address: str | None = None,
        extra: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not replica_id:
            raise ValueError("replica_id must not be empty")
        if not endpoint:
            raise ValueError("endpoint must not be empty")
        self.replica_id = replica_id
        self.endpoint = endpoint
        self.settings = settings
        self._store = store
        self._clock = clock
        self._pid = os.getpid() if pid is None else pid
        self._metrics_address = metrics_address
        self._extra = dict(extra or {})
        self._rng = rng or random.Random()
        self._applied_epoch = 0
        self._own: records.Record | None = None
        self._beats = 0
        self._registered_until = -math.inf
        self._seen: dict[str, _Seen] = {}
        self._live: tuple[Member, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._dirty = asyncio.Event()
        self._first_beat = asyncio.Event()
        self._changed = lease.Notifier()
        registry = registry or prometheus_client.CollectorRegistry()
        self._live_gauge = catalog.gauge(registry, catalog.MEMBERS_LIVE)
        catalog.gauge(registry, catalog.MEMBER).set_function(
            lambda: 1.0 if self.is_registered() else 0.0
        )

    # -- what callers read --

    @property
    def applied_epoch(self) -> int:
        return self._applied_epoch

    def set_applied_epoch(self, epoch: int) -> None:
        """Advertise that this replica has applied shard-map `epoch` (written at once)."""
        if epoch != self._applied_epoch:
            self._applied_epoch = epoch
            self._dirty.set()

    def set_serving(self, serving: bool) -> None:
        """Advertise whether this replica can serve agents now (written at once)."""
        if (self._extra.get(SERVING) is not False) != serving:
            self._extra[SERVING] = serving
            self._dirty.set()

    def set_extra(self, key: str, value: Any) -> None:
        """Report `value` under `key` among the extras, written with the next heartbeat
        (for people and tools: peers' decisions never depend on it)."""
        self._extra[key] = value

    def renewed_at(self, replica_id: str) -> float | None:
        """Loop time at which we first saw the member's current record (None: unknown):
        a replica renews it every member_heartbeat, so a recent one means it is alive."""
        seen = self._seen.get(member_record_name(replica_id))
        return seen.at if seen is not None else None

    def live_members(self) -> list[Member]:
        """Members seen alive within the lease duration, sorted by replica id."""
        return list(self._live)

    def is_registered(self) -> bool:
        """True while our own record was written within the renew deadline (else self-fence)."""
        return self._loop is not None and self._loop.time() < self._registered_until

    async def wait_changed(self) -> None:
        """Return at the next change of the live set (ids or endpoints)."""
        await self._changed.wait()

    def stop(self) -> None:
        self._stopping.set()

    # -- the loops --

    async def run(self) -> None:
        """Heartbeat and watch until stopped or cancelled; then delete our own record."""
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat(), name=f"membership:{self.replica_id}:heartbeat")
                group.create_task(self._watch(), name=f"membership:{self.replica_id}:watch")
        finally:
            await asyncio.shield(self._leave())

    async def _heartbeat(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stopping.is_set():
            self._dirty.clear()
            started = loop.time()
            try:
                await self._write()
            except errors.CoordinationError as err:
                logger.warning("membership: heartbeat of %s failed: %s", self.replica_id, err)
                # Retry soon, not a whole heartbeat later: a failed write (often a whole
                # request timeout) plus a full interval would leave too little of the
                # renew deadline for the next one, and the replica would fence itself.
                wait = self.settings.retry_period * self._rng.uniform(0.5, 1.0)
            else:
                self._registered_until = started + self.settings.renew_deadline
                wait = self.settings.member_heartbeat * self._rng.uniform(0.8, 1.0)
            self._first_beat.set()
            await self._sleep(wait, wake_on_dirty=True)

    async def _write(self) -> None:
        self._beats += 1
        data: dict[str, Any] = {
            REPLICA_ID: self.replica_id,
            ENDPOINT: self.endpoint,
            APPLIED_EPOCH: self._applied_epoch,
            PID: self._pid,
            METRICS: self._metrics_address,
            EXTRA: self._extra,
            RENEW_TIME: lease.format_time(self._clock()),
            HEARTBEAT: self._beats,
        }
        name = member_record_name(self.replica_id)
        for _ in range(2):
            own = self._own
            try:
                if own is None:
                    own = await self._call("get", self._store.get(name))
                if own is None:
                    self._own = await self._call("create", self._store.create(name, data))
                else:
                    self._own = await self._call("update", self._store.update(own, data))
                return
            except errors.ConflictError:
                self._own = None  # re-read and write once more
        raise errors.ConflictError(f"member record {name!r} keeps changing under us")

    async def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        # List after our own first write, so the first live set we report includes us.
        await lease.sleep(self.settings.request_timeout, self._first_beat)
        while not self._stopping.is_set():
            try:
                found = await self._call("list", self._store.list(MEMBER_PREFIX))
            except errors.CoordinationError as err:
                logger.debug("membership: cannot list members: %s", err)
            else:
                self._ingest(found, now=loop.time())
            self._refresh(now=loop.time())
            await self._sleep(
                self.settings.retry_period * self._rng.uniform(1.0, settings_.JITTER_FACTOR)
            )

    def _ingest(self, found: list[records.Record], *, now: float) -> None:
        seen: dict[str, _Seen] = {}
        for record in found:
            member = Member.from_record(record)
            if member is None:
                continue
            before = self._seen.get(record.name)
            if before is not None and before.version == record.version:
                seen[record.name] = before
            else:
                seen[record.name] = _Seen(version=record.version, at=now, member=member)
        self._seen = seen

    def _refresh(self, *, now: float) -> None:
        horizon = now - self.settings.lease_duration
        live = tuple(
            sorted(
                (seen.member for seen in self._seen.values() if seen.at > horizon),
                key=lambda member: member.replica_id,
            )
        )
        shape = [(m.replica_id, m.endpoint, m.serving) for m in live]
        changed = shape != [(m.replica_id, m.endpoint, m.serving) for m in self._live]
        self._live = live
        self._live_gauge.set(len(live))
        if changed:
            logger.info(
                "membership: live set is now %s",
                ",".join(m.replica_id for m in live) or "(empty)",
                extra={lease.FIELD_REPLICA: self.replica_id},
            )
            self._changed.notify()

    async def _leave(self) -> None:
        """Delete our own record so the others drop us at once (best effort)."""
        own = self._own
        self._registered_until = -math.inf
        if own is None:
            return
        try:
            await self._call("delete", self._store.delete(own))
        except errors.CoordinationError as err:
            logger.warning("membership: could not delete the member record: %s", err)
        else:
            self._own = None

    # -- helpers --

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        return await lease.bounded(f"member {what}", call, within=self.settings.request_timeout)

    async def _sleep(self, delay: float, *, wake_on_dirty: bool = False) -> None:
        if not wake_on_dirty:
            await lease.sleep(delay, self._stopping)
            return
        stop = asyncio.ensure_future(self._stopping.wait())
        dirty = asyncio.ensure_future(self._dirty.wait())
        try:
            await asyncio.wait([stop, dirty], timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            dirty.cancel()
