"""Membership: member records kept alive, live set by local observation, fast leave."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client
import pytest

from election import _etcd as etcd
from election import _etcdrecords as etcdrecords
from election import _membership as membership
from election import _settings as settings_
from election import lease
from tests.election import _helpers as helpers

FAST = helpers.FAST


def make(store, name: str, **kwargs) -> membership.Membership:  # type: ignore[no-untyped-def]
    return membership.Membership(
        store,
        replica_id=lease.ReplicaId(name),
        endpoint=f"{name}.local:8443",
        settings=FAST,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def running(members: list[membership.Membership]) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(m.run(), name=f"test-membership-{m.replica_id}") for m in members]
    try:
        yield tasks
    finally:
        for member in members:
            member.stop()
        await asyncio.gather(*tasks)


def live_ids(member: membership.Membership) -> list[str]:
    return [m.replica_id for m in member.live_members()]


async def test_every_replica_sees_every_live_member_with_its_details() -> None:
    stores = helpers.stores(3)
    registry = prometheus_client.CollectorRegistry()
    members = [
        make(
            stores[0],
            "r0",
            registry=registry,
            pid=4242,
            metrics_address="127.0.0.1:9100",
            extra={"zone": "a"},
        ),
        make(stores[1], "r1"),
        make(stores[2], "r2"),
    ]
    async with running(members):
        await helpers.until(
            lambda: all(live_ids(m) == ["r0", "r1", "r2"] for m in members), what="all live"
        )
        seen = members[2].live_members()[0]
        assert seen == membership.Member(
            replica_id=lease.ReplicaId("r0"),
            endpoint="r0.local:8443",
            applied_epoch=0,
            pid=4242,
            metrics="127.0.0.1:9100",
            extra={"zone": "a"},
        )
        assert registry.get_sample_value("mooring_members_live") == 3.0
        assert all(m.is_registered() for m in members)


async def test_applied_epoch_is_advertised_at_once() -> None:
    stores = helpers.stores(2)
    members = [make(stores[0], "r0"), make(stores[1], "r1")]
    async with running(members):
        await helpers.until(lambda: len(members[1].live_members()) == 2)
        members[0].set_applied_epoch(7)
        assert members[0].applied_epoch == 7
        await helpers.until(
            lambda: members[1].live_members()[0].applied_epoch == 7,
            within=FAST.member_heartbeat,  # written at once, not at the next heartbeat
            what="epoch 7 advertised",
        )


async def test_dead_member_leaves_after_lease_and_graceful_one_at_once() -> None:
    stores = helpers.stores(3)
    members = [make(store, f"r{i}") for i, store in enumerate(stores)]
    async with running(members) as tasks:
        await helpers.until(lambda: live_ids(members[0]) == ["r0", "r1", "r2"])
        loop = asyncio.get_running_loop()
        # r2 crashes: its store fails, its record stops changing.
        helpers.unavailable(stores[2])
        died = loop.time()
        changed = asyncio.ensure_future(members[0].wait_changed())
        await helpers.until(lambda: live_ids(members[0]) == ["r0", "r1"], what="r2 expired")
        assert FAST.lease_duration - FAST.member_heartbeat - 0.05 < loop.time() - died
        assert loop.time() - died < FAST.lease_duration + 3 * FAST.retry_period
        await asyncio.wait_for(changed, 1)
        await helpers.until(lambda: not members[2].is_registered(), what="r2 self-fences")
        # r1 stops gracefully: it deletes its record and leaves at once.
        members[1].stop()
        await tasks[1]
        left = loop.time()
        await helpers.until(lambda: live_ids(members[0]) == ["r0"], what="r1 left")
        assert loop.time() - left < FAST.lease_duration / 2
        assert await stores[0].get(membership.member_record_name("r1")) is None


async def test_wall_clock_does_not_judge_liveness() -> None:
    stores = helpers.stores(2)
    frozen = helpers.FROZEN_CLOCK
    members = [make(stores[0], "r0", clock=frozen), make(stores[1], "r1", clock=frozen)]
    async with running(members):
        await helpers.until(lambda: live_ids(members[1]) == ["r0", "r1"])
        loop = asyncio.get_running_loop()
        end = loop.time() + 2 * FAST.lease_duration
        while loop.time() < end:  # stamps never move, yet both stay live
            assert live_ids(members[1]) == ["r0", "r1"]
            await asyncio.sleep(0.01)


def test_member_from_malformed_record_is_none() -> None:
    from election import _records as records

    assert membership.Member.from_record(records.Record("members/x", {"endpoint": 1}, "1")) is None
    bare = membership.Member.from_record(
        records.Record("members/x", {"replicaId": "x", "endpoint": "h:1", "pid": "no"}, "1")
    )
    assert bare == membership.Member(replica_id=lease.ReplicaId("x"), endpoint="h:1")


def test_membership_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        membership.Membership(
            helpers.stores(1)[0], replica_id=lease.ReplicaId("x"), endpoint="", settings=FAST
        )


@pytest.mark.integration
async def test_membership_on_real_etcd(etcd, prefix: str) -> None:  # type: ignore[no-untyped-def]
    kvs = [etcd_kv(etcd) for _ in range(2)]
    for kv in kvs:
        await kv.connect()
    stores = [etcdrecords.EtcdRecordStore(kv, prefix=prefix + "/") for kv in kvs]
    members = [make(store, f"r{i}") for i, store in enumerate(stores)]
    try:
        async with running(members) as tasks:
            await helpers.until(lambda: live_ids(members[0]) == ["r0", "r1"], what="both live")
            members[1].set_applied_epoch(3)
            await helpers.until(lambda: members[0].live_members()[1].applied_epoch == 3)
            members[1].stop()
            await tasks[1]
            await helpers.until(lambda: live_ids(members[0]) == ["r0"], what="r1 left")
    finally:
        for store in stores:
            await store.close()


def etcd_kv(cluster) -> etcd.EtcdKV:  # type: ignore[no-untyped-def]
    return etcd.EtcdKV(cluster.endpoints, timeout=FAST.request_timeout)


async def test_a_failed_heartbeat_is_retried_within_the_retry_period() -> None:
    # Heartbeats 1 s apart, retries 0.1 s: a failed write must not wait a whole heartbeat.
    slow = settings_.ElectionSettings(
        lease_duration=4.0, renew_deadline=3.0, retry_period=0.1, request_timeout=1.0
    )
    store = helpers.stores(1)[0]
    writes: list[tuple[float, bool]] = []  # (when, failed)
    real_update = store.update

    async def update(*args: Any, **kwargs: Any) -> Any:
        failed = store.fail
        writes.append((asyncio.get_running_loop().time(), failed))
        return await real_update(*args, **kwargs)

    store.update = update  # type: ignore[method-assign]
    member = membership.Membership(
        store, replica_id=lease.ReplicaId("r0"), endpoint="r0.local:8443", settings=slow
    )
    async with running([member]):
        await helpers.until(lambda: len(writes) >= 1, within=5, what="a first update")
        store.fail = True
        await helpers.until(lambda: writes[-1][1], within=5, what="a failed update")
        store.fail = False
        failed_at = writes[-1][0]
        await helpers.until(lambda: not writes[-1][1], within=5, what="the retry")
        assert writes[-1][0] - failed_at <= slow.retry_period + 0.05
        assert member.is_registered()
