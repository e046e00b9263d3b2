"""Fenced leader election: one leader, fast takeover, work stopped before a successor starts."""

from __future__ import annotations

import asyncio
import datetime
import time

import prometheus_client
import pytest

from election import _electing as electing
from election import _etcd as etcd
from election import _etcdrecords as etcdrecords
from election import _settings as settings_
from tests.election import _helpers as helpers

FAST = helpers.FAST


def make(store, name: str, **kwargs) -> electing.Elector:  # type: ignore[no-untyped-def]
    return electing.Elector(store, replica_id=electing.ReplicaId(name), settings=FAST, **kwargs)


# -- settings --


def test_default_settings_are_fast_and_valid() -> None:
    defaults = settings_.ElectionSettings()
    assert (defaults.lease_duration, defaults.renew_deadline, defaults.retry_period) == (4, 3, 0.5)
    assert defaults.request_timeout == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease_duration": 3.0, "renew_deadline": 3.0}, "lease_duration"),
        ({"renew_deadline": 0.6, "retry_period": 0.5, "request_timeout": 0.3}, "1.2 x retry"),
        ({"request_timeout": 2.0}, "request_timeout"),
        ({"retry_period": 0.0}, "positive"),
        ({"lease_duration": float("nan")}, "positive"),
        ({"request_timeout": -1.0}, "positive"),
    ],
)
def test_settings_reject_unsafe_timing(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_.ElectionSettings(**kwargs)


def test_transition_table_is_closed() -> None:
    for source, targets in electing.TRANSITIONS.items():
        assert source not in targets
        assert electing.State.STOPPED in targets or source is electing.State.STOPPED


# -- memory store, loop clock --


async def test_exactly_one_leader_among_five() -> None:
    stores = helpers.stores(5)
    electors = [make(store, f"r{i}") for i, store in enumerate(stores)]
    log = helpers.WorkLog()
    async with helpers.electing_all(electors, log):
        await helpers.until(lambda: len(helpers.leaders(electors)) == 1, what="a leader")
        first = helpers.leaders(electors)[0]
        loop = asyncio.get_running_loop()
        end = loop.time() + 3 * FAST.lease_duration
        while loop.time() < end:  # watch several lease periods: never two, same leader
            assert helpers.leaders(electors) == [first]
            assert len(log.running()) == 1
            await asyncio.sleep(0.01)
        assert {e.leader for e in electors} == {first.replica_id}
        assert all(e.state is electing.State.FOLLOWER for e in electors if e is not first)
    assert len(log.terms) == 1
    assert all(e.state is electing.State.STOPPED for e in electors)


async def test_takeover_after_holder_dies_increments_transitions() -> None:
    stores = helpers.stores(3)
    electors = [make(store, f"r{i}") for i, store in enumerate(stores)]
    log = helpers.WorkLog()
    async with helpers.electing_all(electors, log):
        await helpers.until(lambda: len(helpers.leaders(electors)) == 1)
        old = helpers.leaders(electors)[0]
        old_token = old.fencing_token
        assert old_token is not None
        helpers.unavailable(stores[electors.index(old)])
        loop = asyncio.get_running_loop()
        died = loop.time()
        await helpers.until(
            lambda: any(e.is_leader() for e in electors if e is not old), what="a successor"
        )
        took = loop.time() - died
        new = helpers.leaders(electors)[0]
        assert new is not old and not old.is_leader()
        assert new.fencing_token == old_token + 1
        record = await stores[electors.index(new)].get(electing.LEASE_RECORD)
        assert record is not None
        assert record.data["holderIdentity"] == new.replica_id
        assert record.data["leaseTransitions"] == old_token + 1
        # No earlier than the lease duration after the last renewal, and not much later.
        assert FAST.lease_duration - FAST.retry_period - 0.05 < took < 3 * FAST.lease_duration
    log.assert_no_overlap()


async def test_hung_holder_stops_work_before_anyone_else_starts_it() -> None:
    stores = helpers.stores(2)
    electors = [make(store, f"r{i}") for i, store in enumerate(stores)]
    log = helpers.WorkLog()
    async with helpers.electing_all(electors, log):
        await helpers.until(lambda: len(log.running()) == 1)
        old = helpers.leaders(electors)[0]
        stores[electors.index(old)].hang = True  # every call now blocks until it times out
        await helpers.until(lambda: len(log.terms) == 2, what="a second term")
        first, second = log.terms
        assert first.replica == old.replica_id and second.replica != old.replica_id
        assert first.ended is not None and first.ended < second.started
        assert not old.is_leader()
        assert second.token > first.token
        stores[electors.index(old)].hang = False
    log.assert_no_overlap()


async def test_graceful_release_makes_takeover_immediate() -> None:
    stores = helpers.stores(2)
    electors = [make(store, f"r{i}") for i, store in enumerate(stores)]
    tasks = [asyncio.create_task(e.run(), name=f"elector-{e.replica_id}") for e in electors]
    try:
        await helpers.until(lambda: len(helpers.leaders(electors)) == 1)
        old = helpers.leaders(electors)[0]
        other = next(e for e in electors if e is not old)
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        old.stop()
        await tasks[electors.index(old)]
        record = await stores[0].get(electing.LEASE_RECORD)
        took = await helpers.until(other.is_leader, what="the successor") - stopped
        assert took < FAST.lease_duration / 2  # well before the lease could have expired
        assert record is not None and record.data["holderIdentity"] == ""
        assert old.state is electing.State.STOPPED
    finally:
        for elector in electors:
            elector.stop()
        await asyncio.gather(*tasks)


async def test_wall_clock_jump_causes_no_early_takeover() -> None:
    stores = helpers.stores(2)
    epoch = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    jumps = iter(range(10**6))

    def skewed_clock() -> datetime.datetime:  # a follower whose clock leaps an hour a call
        return epoch + datetime.timedelta(hours=next(jumps))

    def frozen_clock() -> datetime.datetime:  # a holder whose stamps never move
        return epoch - datetime.timedelta(days=365)

    holder = make(stores[0], "holder", clock=frozen_clock)
    async with helpers.electing_all([holder]):
        await helpers.until(holder.is_leader)
        token = holder.fencing_token
        follower = make(stores[1], "follower", clock=skewed_clock)
        async with helpers.electing_all([follower]):
            loop = asyncio.get_running_loop()
            end = loop.time() + 3 * FAST.lease_duration
            while loop.time() < end:
                assert holder.is_leader() and not follower.is_leader()
                await asyncio.sleep(0.01)
            assert follower.leader == "holder"
            assert holder.fencing_token == token


async def test_is_leader_checks_the_local_deadline_at_call_time() -> None:
    store = helpers.stores(1)[0]
    registry = prometheus_client.CollectorRegistry()
    elector = make(store, "solo", registry=registry)
    async with helpers.electing_all([elector]):
        await helpers.until(elector.is_leader)
        assert registry.get_sample_value("mooring_leader") == 1.0
        # A stopped (SIGSTOP) process: the loop runs nothing, yet the clock moves on.
        time.sleep(FAST.renew_deadline + 0.05)  # noqa: ASYNC251 - freezing the loop is the point
        assert not elector.is_leader()
        assert elector.fencing_token is None
        assert registry.get_sample_value("mooring_leader") == 0.0


async def test_failing_leader_work_releases_the_lease() -> None:
    stores = helpers.stores(2)
    attempts: list[str] = []

    async def flaky(fence: electing.Fence) -> None:
        attempts.append(fence.holder)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    electors = [make(store, f"r{i}") for i, store in enumerate(stores)]
    tasks = [asyncio.create_task(e.run(flaky)) for e in electors]
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await helpers.until(lambda: len(attempts) == 2, what="a second term")
        assert loop.time() - start < FAST.lease_duration  # released, not expired
        assert attempts[0] != attempts[1]  # the failed leader stood back
    finally:
        for elector in electors:
            elector.stop()
        await asyncio.gather(*tasks)


async def test_metrics_follow_the_state_machine() -> None:
    store = helpers.stores(1)[0]
    registry = prometheus_client.CollectorRegistry()
    elector = make(store, "solo", registry=registry)
    async with helpers.electing_all([elector]):
        await helpers.until(elector.is_leader)
        await helpers.until(
            lambda: (registry.get_sample_value("mooring_lease_renew_seconds_count") or 0) >= 2
        )
        assert registry.get_sample_value("mooring_lease_transitions_total") == 1.0
        assert registry.get_sample_value("mooring_election_state", {"state": "leader"}) == 1.0
        assert registry.get_sample_value("mooring_lease_renew_failures_total") == 0.0
        store.fail = True
        await helpers.until(lambda: not elector.is_leader())
        assert (registry.get_sample_value("mooring_lease_renew_failures_total") or 0) >= 1
        store.fail = False
    assert registry.get_sample_value("mooring_election_state", {"state": "stopped"}) == 1.0
    moves = registry.get_sample_value(
        "mooring_election_state_transitions_total",
        {"from_state": "leader", "to_state": "follower"},
    )
    assert moves == 1.0


async def test_elector_runs_once() -> None:
    elector = make(helpers.stores(1)[0], "solo")
    elector.stop()
    await elector.run()
    with pytest.raises(RuntimeError, match="runs once"):
        await elector.run()


# -- real etcd --


@pytest.mark.integration
async def test_election_on_real_etcd(etcd, prefix: str) -> None:  # type: ignore[no-untyped-def]
    kvs = [etcd_kv(etcd) for _ in range(3)]
    for kv in kvs:
        await kv.connect()
    stores = [etcdrecords.EtcdRecordStore(kv, prefix=prefix + "/") for kv in kvs]
    electors = [make(store, f"r{i}") for i, store in enumerate(stores)]
    log = helpers.WorkLog()
    try:
        async with helpers.electing_all(electors, log) as tasks:
            await helpers.until(lambda: len(helpers.leaders(electors)) == 1, what="a leader")
            old = helpers.leaders(electors)[0]
            old.stop()
            await tasks[electors.index(old)]
            await helpers.until(lambda: len(helpers.leaders(electors)) == 1, what="a successor")
            new = helpers.leaders(electors)[0]
            assert new is not old
            assert log.terms[1].token == log.terms[0].token + 1
        log.assert_no_overlap()
    finally:
        for store in stores:
            await store.close()


def etcd_kv(cluster) -> etcd.EtcdKV:  # type: ignore[no-untyped-def]
    return etcd.EtcdKV(cluster.endpoints, timeout=FAST.request_timeout)
