"""The shard map: which replicas share the agents, under which epoch, published by the leader.

The map is small (O(replicas)): the live members' ids and endpoints plus the ring parameters;
any replica computes `owner(agent)` from it with `election._ring`. Only the leader publishes,
with epoch + 1, whenever the live set changes, and every write is conditioned on its fencing
token: through the store's fenced transaction where it has one (`update_fenced`: the write
lands only while the leader's lease record is unchanged), and in any case refused when the
stored map already carries a higher token. Every replica polls the map and applies each new
epoch (`MapWatcher.current`, a notification, an optional callback).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NewType, Protocol, TypeVar, runtime_checkable

import prometheus_client

from election import _electing as electing
from election import _errors as errors
from election import _lease as lease
from election import _membership as membership
from election import _records as records
from election import _ring as ring
from election import _settings as settings_
from proto import catalog

__all__ = [
    "DEFAULT_EPSILON",
    "MAP_RECORD",
    "Epoch",
    "FencedStore",
    "MapWatcher",
    "ShardMap",
    "keep_published",
    "publish",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

Epoch = NewType("Epoch", int)

MAP_RECORD = "shardmap"

DEFAULT_EPSILON = ring.DEFAULT_EPSILON
"""Bounded-load slack: no replica owns more than (1 + epsilon) x the mean number of agents."""


@runtime_checkable
class FencedStore(Protocol):
    """A store that can condition a write on the leader's lease record in one transaction."""

    async def update_fenced(
        self,
        record: records.Record | None,
        data: Mapping[str, Any],
        *,
        fence: records.Record,
        name: str | None = None,
    ) -> records.Record: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ShardMap:
    """One epoch of the shard map; `members` is sorted by replica id."""

    epoch: Epoch
    members: tuple[tuple[lease.ReplicaId, str], ...]
    published_by: lease.ReplicaId
    token: lease.FencingToken
    epsilon: float = DEFAULT_EPSILON
    published_at: str = ""  # wall clock, for people only

    def __post_init__(self) -> None:
        members = tuple(sorted((str(rid), str(endpoint)) for rid, endpoint in self.members))
        object.__setattr__(self, "members", tuple((lease.ReplicaId(r), e) for r, e in members))
        ids = [rid for rid, _ in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError(f"shard map lists a replica twice: {ids}")
        if any(not rid or not endpoint for rid, endpoint in self.members):
            raise ValueError("shard map members need a replica id and an endpoint")
        if self.epoch < 1:
            raise ValueError(f"shard map epoch must be >= 1, not {self.epoch}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ValueError(f"epsilon must be a finite number >= 0, not {self.epsilon}")

    @property
    def replica_ids(self) -> tuple[lease.ReplicaId, ...]:
        return tuple(rid for rid, _ in self.members)

    def endpoint_of(self, replica_id: str) -> str | None:
        return dict(self.members).get(lease.ReplicaId(replica_id))

    def build_ring(self, agents: Iterable[str]) -> ring.Ring:
        """The agent assignment under this map: `shard_map.build_ring(agents).owner(agent)`."""
        return ring.Ring(agents, self.replica_ids, epsilon=self.epsilon)

    def same_layout(
        self, members: Iterable[tuple[str, str]], *, epsilon: float = DEFAULT_EPSILON
    ) -> bool:
        """True when `members` and `epsilon` are what this map already says."""
        return self.members == tuple(sorted(members)) and self.epsilon == epsilon

    def to_data(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "members": [{"id": rid, "endpoint": endpoint} for rid, endpoint in self.members],
            "epsilon": self.epsilon,
            "publishedBy": self.published_by,
            "fencingToken": self.token,
            "publishedAt": self.published_at,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ShardMap:
        """Parse a stored map; ValueError when it is malformed."""
        try:
            members = tuple(
                (lease.ReplicaId(_str(item["id"])), _str(item["endpoint"]))
                for item in data["members"]
            )
            return cls(
                epoch=Epoch(_int(data["epoch"])),
                members=members,
                published_by=lease.ReplicaId(_str(data["publishedBy"])),
                token=lease.FencingToken(_int(data["fencingToken"])),
                epsilon=float(data.get("epsilon", DEFAULT_EPSILON)),
                published_at=str(data.get("publishedAt", "")),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed shard map: {err!r}") from err

    def to_json(self) -> str:
        return json.dumps(self.to_data(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ShardMap:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"shard map is not JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError("shard map is not a JSON object")
        return cls.from_data(data)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _parse(record: records.Record) -> ShardMap:
    try:
        return ShardMap.from_data(record.data)
    except ValueError as err:
        raise errors.CoordinationError(f"stored shard map is unreadable: {err}") from err


async def publish(
    store: records.RecordStore,
    *,
    fence: electing.Fence,
    members: Sequence[tuple[str, str]],
    settings: settings_.ElectionSettings,
    epsilon: float = DEFAULT_EPSILON,
    clock: lease.WallClock = lease.utc_now,
) -> ShardMap:
    """Make the stored map list `members` (epoch + 1 if it changes); return the stored map.

    Raises StaleFenceError when our term is over or the stored map carries a higher token;
    retries lost races and unavailable stores within renew_deadline.
    """
    retrying = settings_.store_retrying(settings, budget=settings.renew_deadline)
    async for attempt in retrying:
        with attempt:
            for _ in range(3):
                try:
                    return await _publish_once(
                        store,
                        fence=fence,
                        members=members,
                        settings=settings,
                        epsilon=epsilon,
                        clock=clock,
                    )
                except lease.StaleFenceError:
                    raise
                except errors.ConflictError as err:
                    logger.debug("shard map: publication raced (%s); re-reading", err)
            raise errors.ConflictError("shard map: publication keeps losing races")
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


async def _publish_once(
    store: records.RecordStore,
    *,
    fence: electing.Fence,
    members: Sequence[tuple[str, str]],
    settings: settings_.ElectionSettings,
    epsilon: float,
    clock: lease.WallClock,
) -> ShardMap:
    def call(what: str, awaitable: Awaitable[T]) -> Awaitable[T]:
        return lease.bounded(f"shard map {what}", awaitable, within=settings.request_timeout)

    fence.check()
    record = await call("get", store.get(MAP_RECORD))
    current = None if record is None else _parse(record)
    if current is not None and current.token > fence.token:
        raise lease.StaleFenceError(
            f"shard map epoch {current.epoch} carries fencing token {current.token},"
            f" above ours ({fence.token})"
        )
    if current is not None and current.same_layout(members, epsilon=epsilon):
        return current
    new = ShardMap(
        epoch=Epoch(1 if current is None else current.epoch + 1),
        members=tuple((lease.ReplicaId(rid), endpoint) for rid, endpoint in members),
        published_by=fence.holder,
        token=fence.token,
        epsilon=epsilon,
        published_at=lease.format_time(clock()),
    )
    data = new.to_data()
    if isinstance(store, FencedStore):
        await call(
            "fenced write",
            store.update_fenced(record, data, fence=fence.lease(), name=MAP_RECORD),
        )
    else:
        fence.check()
        if record is None:
            await call("create", store.create(MAP_RECORD, data))
        else:
            await call("update", store.update(record, data))
    logger.info(
        "shard map: published epoch %d with %s",
        new.epoch,
        ",".join(new.replica_ids),
        extra={lease.FIELD_REPLICA: fence.holder, lease.FIELD_TOKEN: fence.token},
    )
    return new


SERVING_STABLE = 1.0
"""Seconds a member's serving state must have held, as the leader saw it, before the
leader acts on it: a member that cannot serve is left out only once it has not been
able to for this long, and while another has served for this long. A Redis outage
fences every replica within a fraction of a second of each other, and a Redis that
comes back lets them all serve again just as close together: neither moves anyone."""


def _mapped(
    live: Sequence[membership.Member], since: Mapping[str, float], now: float
) -> tuple[list[tuple[str, str]], bool]:
    """(the members a map should list, whether to look again in SERVING_STABLE s).

    `since`: when the leader last saw each member's serving state change."""

    def settled(m: membership.Member) -> bool:
        return now - since.get(m.replica_id, now) >= SERVING_STABLE

    serving = any(m.serving and settled(m) for m in live)
    listed = [m for m in live if m.serving or not settled(m) or not serving]
    unsettled = any(not settled(m) for m in live) and any(not m.serving for m in live)
    return [(m.replica_id, m.endpoint) for m in listed], unsettled


async def keep_published(
    fence: electing.Fence,
    *,
    store: records.RecordStore,
    members: membership.Membership,
    settings: settings_.ElectionSettings,
    epsilon: float = DEFAULT_EPSILON,
    clock: lease.WallClock = lease.utc_now,
    on_published: Callable[[ShardMap], None] | None = None,
) -> None:
    """Leader work: publish a new map whenever the live set changes, until cancelled.

    Raises StaleFenceError when a newer leader has published (which ends our term).
    """
    loop = asyncio.get_running_loop()
    state: dict[str, tuple[bool, float]] = {}  # member -> (serving, since when we saw it)
    while True:
        changed = asyncio.ensure_future(members.wait_changed())  # subscribe before reading
        try:
            now = loop.time()
            current = members.live_members()
            for member in current:
                seen = state.get(member.replica_id)
                if seen is None or seen[0] != member.serving:
                    state[member.replica_id] = (member.serving, now)
            since = {rid: at for rid, (_, at) in state.items()}
            live, soon = _mapped(current, since, now)
            pause = SERVING_STABLE if soon else settings.lease_duration
            if live:
                try:
                    published = await publish(
                        store,
                        fence=fence,
                        members=live,
                        settings=settings,
                        epsilon=epsilon,
                        clock=clock,
                    )
                except lease.StaleFenceError:
                    raise
                except errors.CoordinationError as err:
                    logger.warning("shard map: publication failed: %s", err)
                    pause = settings.retry_period
                else:
                    if on_published is not None:
                        on_published(published)
            await asyncio.wait([changed], timeout=pause)
        finally:
            changed.cancel()


class MapWatcher:
    """Polls the stored map and applies every newer epoch: `current`, `wait_changed()`, callback."""

    def __init__(
        self,
        store: records.RecordStore,
        *,
        settings: settings_.ElectionSettings,
        registry: prometheus_client.CollectorRegistry | None = None,
        on_map: Callable[[ShardMap], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._on_map = on_map
        self._rng = rng or random.Random()
        self._current: ShardMap | None = None
        self._seen_version: str | None = None
        self._stopping = asyncio.Event()
        self._changed = lease.Notifier()
        self._epoch_gauge = catalog.gauge(
            registry or prometheus_client.CollectorRegistry(), catalog.SHARD_EPOCH
        )

    @property
    def current(self) -> ShardMap | None:
        return self._current

    async def wait_changed(self) -> ShardMap:
        """Return the next map applied after this call."""
        await self._changed.wait()
        assert self._current is not None
        return self._current

    def stop(self) -> None:
        self._stopping.set()

    def offer(self, shard_map: ShardMap) -> None:
        """Apply `shard_map` if it is newer than the current one (the leader's own publications)."""
        current = self._current
        if current is not None and shard_map.epoch <= current.epoch:
            return
        self._current = shard_map
        self._epoch_gauge.set(shard_map.epoch)
        logger.info(
            "shard map: applied epoch %d (%s)",
            shard_map.epoch,
            ",".join(shard_map.replica_ids) or "no replicas",
        )
        if self._on_map is not None:
            try:
                self._on_map(shard_map)
            except Exception:
                logger.exception("shard map: on_map callback failed for epoch %d", shard_map.epoch)
        self._changed.notify()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                record = await lease.bounded(
                    "shard map get",
                    self._store.get(MAP_RECORD),
                    within=self.settings.request_timeout,
                )
            except errors.CoordinationError as err:
                logger.debug("shard map: cannot read: %s", err)
            else:
                if record is not None and record.version != self._seen_version:
                    self._seen_version = record.version
                    try:
                        self.offer(ShardMap.from_data(record.data))
                    except ValueError as err:
                        logger.warning("shard map: ignoring an unreadable map: %s", err)
            await lease.sleep(
                self.settings.retry_period * self._rng.uniform(1.0, settings_.JITTER_FACTOR),
                self._stopping,
            )
