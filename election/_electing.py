"""Fenced leader election: our own loop over one compare-and-swap record with Lease fields.

Safety rests on two clocks kept apart. The wall clock (injected) only stamps the persisted
`acquireTime` / `renewTime`. All judging uses the local monotonic (event-loop) clock:

- a follower takes the lease over only when the record has not been seen to change for
  `leaseDurationSeconds`, counted from the loop time at which *it* first saw the current
  version (never from the holder's timestamp);
- the leader's deadline is the loop time at which its last successful renewal *started*, plus
  `renew_deadline`. A watchdog cancels leader work at that instant, and `is_leader()` compares
  with it at call time, so a frozen process never believes it still leads.

Because the renewal started before any follower could see its result, and
renew_deadline < lease_duration, leader work has stopped before a successor can start its own.
Every term gets a fencing token, the record's `leaseTransitions`, which grows with each takeover.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import prometheus_client

from election import _errors as errors
from election import _records as records
from election import _settings as settings_
from election._lease import (
    ACQUIRE_TIME,
    DURATION,
    FIELD_FROM,
    FIELD_REASON,
    FIELD_REPLICA,
    FIELD_TO,
    FIELD_TOKEN,
    HOLDER,
    LEASE_RECORD,
    LEASE_TRANSITIONS,
    RENEW_TIME,
    TRANSITIONS,
    ElectorMetrics,
    FencingToken,
    Notifier,
    ReplicaId,
    StaleFenceError,
    State,
    WallClock,
    bounded,
    float_field,
    format_time,
    int_field,
    seconds_field,
    sleep,
    utc_now,
)

__all__ = ["Elector", "Fence", "LeaderWork"]  # the lease vocabulary is `election.lease`

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Fence:
    """What leader work is handed: the term's fencing token and the lease record to fence on.

    `token` is the lease's `leaseTransitions` for this term: it only grows from term to term.
    `lease()` is the latest lease record we wrote (for stores with fenced transactions).
    """

    def __init__(self, elector: Elector, *, token: FencingToken) -> None:
        self._elector = elector
        self.token = token
        self.holder = elector.replica_id

    def __repr__(self) -> str:
        return f"Fence(holder={self.holder!r}, token={self.token})"

    @property
    def valid(self) -> bool:
        """True while this term is current and within its local renew deadline."""
        return self._elector._term is self and self._elector.is_leader()

    def check(self) -> None:
        if not self.valid:
            raise StaleFenceError(f"fencing token {self.token} of {self.holder} is no longer valid")

    def lease(self) -> records.Record:
        self.check()
        lease = self._elector._lease
        assert lease is not None  # a valid term always has its lease record
        return lease


LeaderWork = Callable[[Fence], Awaitable[None]]


class _TermEnded(Exception):
    def __init__(self, reason: str, *, release: bool, healthy: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.release = release
        self.healthy = healthy


class Elector:
    """Campaigns for one lease record; runs leader work while it holds it, fenced by a watchdog."""

    def __init__(
        self,
        store: records.RecordStore,
        *,
        replica_id: ReplicaId,
        settings: settings_.ElectionSettings,
        registry: prometheus_client.CollectorRegistry | None = None,
        clock: WallClock = utc_now,
        record_name: str = LEASE_RECORD,
        rng: random.Random | None = None,
    ) -> None:
        if not replica_id:
            raise ValueError("replica_id must not be empty")
        self.replica_id = replica_id
        self.settings = settings
        self._store = store
        self._clock = clock
        self._name = record_name
        self._rng = rng or random.Random()
        self._metrics = ElectorMetrics.create(registry or prometheus_client.CollectorRegistry())
        self._metrics.leader.set_function(lambda: 1.0 if self.is_leader() else 0.0)
        self._metrics.state.labels(state=State.INITIAL.value).set(1)
        self._state = State.INITIAL
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._changed = Notifier()
        # While leading: our term, our latest lease record, our local deadline (loop time).
        self._term: Fence | None = None
        self._lease: records.Record | None = None
        self._deadline = -math.inf
        # What we saw of the record: its version, the loop time we first saw that version,
        # and the holder and lease duration it named.
        self._seen_version: str | None = None
        self._seen_at = -math.inf
        self._seen_holder = ""
        self._seen_duration = settings.lease_duration
        # A takeover whose answer we lost: (leaseTransitions we wrote, loop time we started).
        self._attempt: tuple[int, float] | None = None

    # -- observation (safe to call from any thread: reads only, monotonic clock) --

    @property
    def state(self) -> State:
        return self._state

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else -math.inf

    def is_leader(self) -> bool:
        """True only while we lead and the local renew deadline has not passed, at call time."""
        return self._state is State.LEADER and self._now() < self._deadline

    @property
    def leader(self) -> ReplicaId | None:
        """The replica that holds a live lease as far as we can tell, or None."""
        if self.is_leader():
            return self.replica_id
        if self._state is State.LEADER:
            return None
        holder = self._seen_holder
        if (
            holder
            and holder != self.replica_id
            and self._now() - self._seen_at < self._seen_duration
        ):
            return ReplicaId(holder)
        return None

    @property
    def fence(self) -> Fence | None:
        term = self._term
        return term if term is not None and term.valid else None

    @property
    def fencing_token(self) -> FencingToken | None:
        term = self.fence
        return None if term is None else term.token

    async def wait_changed(self) -> None:
        """Return at the next change of state or of the observed leader."""
        await self._changed.wait()

    def stop(self) -> None:
        """Ask `run()` to stop leader work, release the lease and return."""
        self._stopping.set()
        self._wake()

    # -- the loop --

    async def run(self, work: LeaderWork | None = None) -> None:
        """Campaign until stopped or cancelled; run `work(fence)` during each term."""
        if self._state is not State.INITIAL:
            raise RuntimeError("an Elector runs once")
        self._loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                fence = await self._campaign()
                pause = self.settings.retry_period * self._rng.uniform(1.0, settings_.JITTER_FACTOR)
                if fence is None and self._seen_holder:
                    # Wake when the lease we watch would expire, not a jittered period
                    # later: takeover races are settled by the compare-and-swap anyway.
                    expires_in = self._seen_at + self._seen_duration - self._loop.time()
                    pause = min(pause, max(expires_in, 0.0) + 0.01)
                if fence is not None and not await self._lead(fence, work):
                    pause = self.settings.lease_duration  # our work failed: let another try
                await self._sleep(pause)
        finally:
            self._transition(State.STOPPED, reason="elector stopped")

    async def _campaign(self) -> Fence | None:
        loop = self._loop
        assert loop is not None
        try:
            record = await self._call("get", self._store.get(self._name))
        except errors.CoordinationError as err:
            logger.debug("election: cannot read the lease: %s", err)
            return None
        if self._stopping.is_set():  # asked to stop while we read: start no term
            return None
        now = loop.time()
        if record is None:
            self._transition(State.CANDIDATE, reason="no lease record")
            return await self._take(None, transitions=0)
        self._observe(record, now)
        holder = str(record.data.get(HOLDER) or "")
        if holder == self.replica_id and self._attempt is not None:
            written, started = self._attempt
            self._attempt = None
            if int_field(record.data.get(LEASE_TRANSITIONS)) == written:
                # Our takeover landed though its answer was lost; the term began at `started`.
                self._transition(
                    State.CANDIDATE, reason="adopting a takeover whose answer was lost"
                )
                return self._begin(record, started=started)
        if holder and now - self._seen_at < self._seen_duration:
            self._transition(State.FOLLOWER, reason=f"lease held by {holder}")
            return None
        why = "lease released" if not holder else f"lease of {holder} expired"
        self._transition(State.CANDIDATE, reason=why)
        return await self._take(
            record, transitions=int_field(record.data.get(LEASE_TRANSITIONS)) + 1
        )

    async def _take(self, record: records.Record | None, *, transitions: int) -> Fence | None:
        loop = self._loop
        assert loop is not None
        stamp = format_time(self._clock())
        data = {
            HOLDER: self.replica_id,
            DURATION: seconds_field(self.settings.lease_duration),
            ACQUIRE_TIME: stamp,
            RENEW_TIME: stamp,
            LEASE_TRANSITIONS: transitions,
        }
        started = loop.time()
        try:
            if record is None:
                new = await self._call("create", self._store.create(self._name, data))
            else:
                new = await self._call("takeover", self._store.update(record, data))
        except errors.ConflictError:
            self._transition(State.FOLLOWER, reason="another candidate won")
            return None
        except errors.CoordinationError as err:
            self._attempt = (transitions, started)
            logger.warning("election: takeover failed: %s", err)
            return None
        return self._begin(new, started=started)

    def _begin(self, record: records.Record, *, started: float) -> Fence:
        self._lease = record
        self._deadline = started + self.settings.renew_deadline
        fence = Fence(self, token=FencingToken(int_field(record.data.get(LEASE_TRANSITIONS))))
        self._term = fence
        self._metrics.lease_transitions.inc()
        self._transition(State.LEADER, reason=f"acquired the lease, fencing token {fence.token}")
        return fence

    async def _lead(self, fence: Fence, work: LeaderWork | None) -> bool:
        """Hold the lease and run `work` until the term ends; False if the work failed."""
        reason, release, healthy = "cancelled", True, True
        try:
            try:
                async with asyncio.timeout_at(self._deadline) as watchdog:
                    try:
                        async with asyncio.TaskGroup() as group:
                            group.create_task(
                                self._keep_renewing(watchdog),
                                name=f"elector:{self.replica_id}:renew",
                            )
                            if work is not None:
                                group.create_task(
                                    self._work(work, fence), name=f"elector:{self.replica_id}:work"
                                )
                    except* _TermEnded as ended:
                        first = ended.exceptions[0]
                        assert isinstance(first, _TermEnded)
                        reason, release, healthy = first.reason, first.release, first.healthy
            except TimeoutError:
                reason = "renew deadline passed: leader work stopped"
        finally:
            lease, self._lease, self._term = self._lease, None, None
            self._deadline = -math.inf
            self._transition(State.FOLLOWER, reason=reason)
            if release and lease is not None:
                await asyncio.shield(self._release(lease, token=fence.token))
        return healthy

    async def _work(self, work: LeaderWork, fence: Fence) -> None:
        try:
            await work(fence)
        except Exception as err:
            logger.exception("election: leader work failed; stepping down")
            raise _TermEnded("leader work failed", release=True, healthy=False) from err
        logger.info("election: leader work finished; keeping the lease")

    async def _keep_renewing(self, watchdog: asyncio.Timeout) -> None:
        loop = self._loop
        assert loop is not None
        pause = True
        while True:
            if pause and await self._sleep(self.settings.retry_period):
                raise _TermEnded("stepping down: stopping", release=True)
            pause = True
            lease = self._lease
            assert lease is not None
            data = dict(lease.data)
            data[DURATION] = seconds_field(self.settings.lease_duration)
            data[RENEW_TIME] = format_time(self._clock())
            started = loop.time()
            try:
                renewed = await self._call("renew", self._store.update(lease, data))
            except errors.ConflictError:
                self._metrics.renew_failures.inc()
                self._lease = await self._reread(lease)
                # Our own earlier write may have landed unanswered: renew again at once.
                pause = self._lease is lease
                continue
            except errors.CoordinationError as err:
                self._metrics.renew_failures.inc()
                logger.warning("election: renewal failed: %s", err)
                continue
            self._lease = renewed
            self._deadline = started + self.settings.renew_deadline
            watchdog.reschedule(self._deadline)
            self._metrics.renew_seconds.observe(loop.time() - started)

    async def _reread(self, lease: records.Record) -> records.Record:
        try:
            current = await self._call("get", self._store.get(self._name))
        except errors.CoordinationError:
            return lease
        if (
            current is None
            or current.data.get(HOLDER) != self.replica_id
            or int_field(current.data.get(LEASE_TRANSITIONS))
            != int_field(lease.data.get(LEASE_TRANSITIONS))
        ):
            holder = None if current is None else current.data.get(HOLDER)
            raise _TermEnded(f"lease lost to {holder or 'nobody'}", release=False)
        return current

    async def _release(self, lease: records.Record, *, token: FencingToken) -> None:
        """Hand the lease back so a successor need not wait for it to expire."""
        data = dict(lease.data)
        data.update({HOLDER: "", DURATION: 1, RENEW_TIME: format_time(self._clock())})
        for _ in range(2):
            try:
                await self._call("release", self._store.update(lease, data))
            except errors.ConflictError:
                try:
                    lease = await self._reread(lease)
                except _TermEnded:
                    return  # someone else holds it already
                continue
            except errors.CoordinationError as err:
                logger.warning("election: could not release the lease: %s", err)
                return
            logger.info("election: released the lease", extra={FIELD_TOKEN: token})
            return

    # -- helpers --

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        return await bounded(f"lease {what}", call, within=self.settings.request_timeout)

    def _observe(self, record: records.Record, now: float) -> None:
        if record.version != self._seen_version:
            self._seen_version = record.version
            self._seen_at = now
        holder = str(record.data.get(HOLDER) or "")
        duration = float_field(record.data.get(DURATION), default=self.settings.lease_duration)
        if (holder, duration) != (self._seen_holder, self._seen_duration):
            self._seen_holder, self._seen_duration = holder, duration
            self._wake()

    async def _sleep(self, delay: float) -> bool:
        return await sleep(delay, self._stopping)

    def _wake(self) -> None:
        self._changed.notify()

    def _transition(self, to: State, *, reason: str) -> None:
        """The one place where the state changes: validate, log from/to, update metrics."""
        source = self._state
        if to is source:
            return
        if to not in TRANSITIONS[source]:
            raise RuntimeError(f"illegal election transition {source.value} -> {to.value}")
        self._state = to
        logger.info(
            "election: %s -> %s (%s)",
            source.value,
            to.value,
            reason,
            extra={
                FIELD_REPLICA: self.replica_id,
                FIELD_FROM: source.value,
                FIELD_TO: to.value,
                FIELD_REASON: reason,
            },
        )
        self._metrics.state.labels(state=source.value).set(0)
        self._metrics.state.labels(state=to.value).set(1)
        self._metrics.state_transitions.labels(from_state=source.value, to_state=to.value).inc()
        self._wake()
