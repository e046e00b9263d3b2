"""The lease record and the vocabulary of an election: identities, tokens, states, metrics.

What `election._electing` (the Elector and its Fence) is built from, and what the
stores and the coordinator share with it: the Lease field names a record holds, the
states and their transition table, and small helpers for bounded waits.
Other packages reach it by its public name, `election.lease`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NewType, TypeVar

import prometheus_client

from election import _errors as errors
from election import _records as records
from election import _ring as ring
from proto import catalog

__all__ = [
    "ACQUIRE_TIME",
    "DURATION",
    "FIELD_FROM",
    "FIELD_REASON",
    "FIELD_REPLICA",
    "FIELD_TO",
    "FIELD_TOKEN",
    "HOLDER",
    "LEASE_RECORD",
    "LEASE_TRANSITIONS",
    "RENEW_TIME",
    "TRANSITIONS",
    "ElectorMetrics",
    "FencingToken",
    "Notifier",
    "ReplicaId",
    "StaleFenceError",
    "State",
    "WallClock",
    "bounded",
    "float_field",
    "format_time",
    "int_field",
    "seconds_field",
    "sleep",
    "utc_now",
]

ReplicaId = ring.ReplicaId  # one identity type for the whole package
FencingToken = NewType("FencingToken", int)
WallClock = Callable[[], datetime.datetime]

LEASE_RECORD = "leader"

# Lease record fields: the coordination.k8s.io/v1 LeaseSpec names.
HOLDER = "holderIdentity"
DURATION = "leaseDurationSeconds"
ACQUIRE_TIME = "acquireTime"
RENEW_TIME = "renewTime"
LEASE_TRANSITIONS = "leaseTransitions"

# Structured log field names.
FIELD_REPLICA = "replica"
FIELD_FROM = "from_state"
FIELD_TO = "to_state"
FIELD_REASON = "reason"
FIELD_TOKEN = "fencing_token"

T = TypeVar("T")


def utc_now() -> datetime.datetime:
    """The default wall clock: only ever used to stamp persisted times."""
    return datetime.datetime.now(datetime.UTC)


format_time = records.format_time  # RFC 3339 with microseconds (Kubernetes MicroTime)


async def bounded(what: str, call: Awaitable[T], *, within: float) -> T:
    """Await one store call for at most `within` seconds; a timeout is StoreUnavailableError."""
    try:
        async with asyncio.timeout(within):
            return await call
    except TimeoutError as err:
        raise errors.StoreUnavailableError(f"{what}: no answer within {within}s") from err


async def sleep(delay: float, wakeup: asyncio.Event) -> bool:
    """Sleep up to `delay` seconds, but return at once when `wakeup` is set; True if it is."""
    if wakeup.is_set():
        return True
    waiter = asyncio.ensure_future(wakeup.wait())
    try:
        await asyncio.wait([waiter], timeout=max(delay, 0.0))
    finally:
        waiter.cancel()
    return wakeup.is_set()


class Notifier:
    """Wakes every current waiter on `notify()`; later waiters wait for the next one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class StaleFenceError(errors.ConflictError):
    """A leader-only write was refused: the writer's fencing token is no longer current."""


class State(enum.Enum):
    INITIAL = "initial"
    FOLLOWER = "follower"  # someone else holds a live lease, or the store does not answer
    CANDIDATE = "candidate"  # the lease looks free or expired: trying to take it
    LEADER = "leader"
    STOPPED = "stopped"


TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.INITIAL: frozenset({State.FOLLOWER, State.CANDIDATE, State.STOPPED}),
    State.FOLLOWER: frozenset({State.CANDIDATE, State.STOPPED}),
    State.CANDIDATE: frozenset({State.FOLLOWER, State.LEADER, State.STOPPED}),
    State.LEADER: frozenset({State.FOLLOWER, State.STOPPED}),
    State.STOPPED: frozenset(),
}


@dataclasses.dataclass(frozen=True, slots=True)
class ElectorMetrics:
    leader: prometheus_client.Gauge
    state: prometheus_client.Gauge
    state_transitions: prometheus_client.Counter
    lease_transitions: prometheus_client.Counter
    renew_seconds: prometheus_client.Histogram
    renew_failures: prometheus_client.Counter

    @classmethod
    def create(cls, registry: prometheus_client.CollectorRegistry) -> ElectorMetrics:
        transitions = catalog.counter(registry, catalog.ELECTION_STATE_TRANSITIONS)
        for before, afters in TRANSITIONS.items():  # every pair at 0: first moves count
            for after in afters:
                transitions.labels(before.value, after.value)
        return cls(
            leader=catalog.gauge(registry, catalog.LEADER),
            state=catalog.gauge(registry, catalog.ELECTION_STATE),
            state_transitions=transitions,
            lease_transitions=catalog.counter(registry, catalog.LEASE_TRANSITIONS),
            renew_seconds=catalog.histogram(registry, catalog.LEASE_RENEW_SECONDS),
            renew_failures=catalog.counter(registry, catalog.LEASE_RENEW_FAILURES),
        )


def int_field(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def float_field(value: Any, *, default: float) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return default
    return result if math.isfinite(result) and result > 0 else default


def seconds_field(value: float) -> int:
    """Lease durations persist as whole seconds (a Lease's int32), rounded up: followers then
    wait at least as long as the holder's own lease_duration, never less."""
    return math.ceil(value)
