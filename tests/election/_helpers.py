"""Helpers for the election tests: fast settings, condition polling, store and fence fakes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from election import _electing as electing
from election import _errors as errors
from election import _memory as memory
from election import _records as records
from election import _settings as settings_
from election import lease
from tests import _poll as poll

# Fast timing for tests: lease 0.6 s, renew deadline 0.4 s, retry 0.1 s, 0.15 s per call.
FAST = settings_.ElectionSettings(
    lease_duration=0.6, renew_deadline=0.4, retry_period=0.1, request_timeout=0.15
)


def FROZEN_CLOCK() -> datetime.datetime:
    """A wall clock stuck in the past: its stamps never change."""
    return datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


async def until(condition: Callable[[], object], *, within: float = 5.0, what: str = "") -> float:
    """`poll.eventually` at these tests' pace: a look every 5 ms (the elections here retry
    every 0.1 s), 5 s by default; the loop time at which `condition` held."""
    await poll.eventually(condition, timeout=within, interval=0.005, what=what or repr(condition))
    return asyncio.get_running_loop().time()


def stores(count: int) -> list[memory.MemoryStore]:
    """`count` memory stores over one backend, each with its own fault switches."""
    first = memory.MemoryStore(timeout=None)
    return [first] + [first.peer() for _ in range(count - 1)]


class PlainStore:
    """Only the RecordStore protocol: no fenced transaction."""

    def __init__(self, inner: records.RecordStore) -> None:
        self.inner = inner

    async def get(self, name: str) -> records.Record | None:
        return await self.inner.get(name)

    async def create(self, name: str, data: Mapping[str, Any]) -> records.Record:
        return await self.inner.create(name, data)

    async def update(self, record: records.Record, data: Mapping[str, Any]) -> records.Record:
        return await self.inner.update(record, data)

    async def delete(self, record: records.Record) -> None:
        await self.inner.delete(record)

    async def list(self, prefix: str = "") -> list[records.Record]:
        return await self.inner.list(prefix)

    async def close(self) -> None:
        await self.inner.close()


@dataclasses.dataclass
class FakeFence:
    """Stands in for `electing.Fence` where a test needs a fence it controls."""

    token: int
    holder: str
    record: records.Record
    valid: bool = True

    def check(self) -> None:
        if not self.valid:
            raise lease.StaleFenceError("fake fence is stale")

    def lease(self) -> records.Record:
        self.check()
        return self.record


@dataclasses.dataclass
class Term:
    replica: str
    token: int
    started: float
    ended: float | None = None


class WorkLog:
    """Leader work that runs until cancelled, recording each term's loop-time interval."""

    def __init__(self) -> None:
        self.terms: list[Term] = []
        self.fences: list[electing.Fence] = []

    def work_for(self, replica: str) -> electing.LeaderWork:
        async def work(fence: electing.Fence) -> None:
            loop = asyncio.get_running_loop()
            term = Term(replica=replica, token=fence.token, started=loop.time())
            self.terms.append(term)
            self.fences.append(fence)
            try:
                await asyncio.Event().wait()
            finally:
                term.ended = loop.time()

        return work

    def running(self) -> list[Term]:
        return [term for term in self.terms if term.ended is None]

    def assert_no_overlap(self) -> None:
        terms = sorted(self.terms, key=lambda term: term.started)
        for before, after in itertools.pairwise(terms):
            assert before.ended is not None and before.ended <= after.started, (before, after)


@contextlib.asynccontextmanager
async def electing_all(
    electors: list[electing.Elector], log: WorkLog | None = None
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run the electors; on exit stop them (graceful release) and wait for them."""
    tasks = [
        asyncio.create_task(
            elector.run(None if log is None else log.work_for(elector.replica_id)),
            name=f"test-elector-{elector.replica_id}",
        )
        for elector in electors
    ]
    try:
        yield tasks
    finally:
        for elector in electors:
            elector.stop()
        _, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def leaders(electors: list[electing.Elector]) -> list[electing.Elector]:
    return [elector for elector in electors if elector.is_leader()]


def unavailable(store: memory.MemoryStore) -> None:
    """Cut `store` off: every call fails (a crashed or partitioned replica)."""
    store.fail = True


__all__ = [
    "FAST",
    "FROZEN_CLOCK",
    "FakeFence",
    "PlainStore",
    "Term",
    "WorkLog",
    "electing_all",
    "errors",
    "leaders",
    "stores",
    "unavailable",
    "until",
]
