"""One conformance suite for every RecordStore adapter, each on its real backend.

`harness` (tests/election/conftest.py) runs each test against: the memory store,
a single-member etcd, a fresh 3-member etcd cluster, and the Kubernetes Lease store
over real HTTP against the Lease test server.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from election import _errors as errors
from election import _records as records
from tests import _poll as poll
from tests.election.store_harness import StoreHarness

LEASE = {
    "holderIdentity": "replica-a",
    "leaseDurationSeconds": 15,
    "acquireTime": "2024-05-01T12:00:00.000000Z",
    "renewTime": "2024-05-01T12:00:05.123456Z",
    "leaseTransitions": 3,
}
MEMBER = {
    "holderIdentity": "replica-a",
    "leaseDurationSeconds": 10,
    "renewTime": "2024-05-01T12:00:05.000001Z",
    "endpoint": "10.0.0.7:8443",
    "appliedEpoch": 7,
}
SHARD_MAP = {
    "epoch": 8,
    "fencingToken": 3,
    "members": {"replica-a": "10.0.0.7:8443", "replica-b": "10.0.0.8:8443"},
    "load": [1.25, None, True],
}


answering = functools.partial(
    poll.eventually,
    until=poll.answered,
    retrying=(errors.StoreUnavailableError,),
    interval=0.02,
)
"""Retry a call while the store is unavailable, up to a deadline (no fixed sleeps)."""


async def test_get_of_a_missing_record_is_none(harness: StoreHarness) -> None:
    store = harness.open()
    assert await store.get("leader") is None


async def test_create_then_get_round_trips_lease_fields_and_extras(
    harness: StoreHarness,
) -> None:
    store = harness.open()
    created = await store.create("leader", LEASE)
    member = await store.create("members/replica-a", MEMBER)
    shard_map = await store.create("shardmap", SHARD_MAP)
    assert (created.name, dict(created.data)) == ("leader", LEASE)
    assert dict(member.data) == MEMBER
    assert dict(shard_map.data) == SHARD_MAP
    assert await harness.open().get("leader") == created
    assert await store.get("members/replica-a") == member
    assert await store.get("shardmap") == shard_map
    assert len({created.version, member.version, shard_map.version}) == 3


async def test_create_of_an_existing_name_conflicts(harness: StoreHarness) -> None:
    store = harness.open()
    first = await store.create("leader", LEASE)
    with pytest.raises(errors.ConflictError):
        await harness.open().create("leader", {**LEASE, "holderIdentity": "replica-b"})
    assert await store.get("leader") == first


async def test_update_is_compare_and_swap_with_a_new_version(harness: StoreHarness) -> None:
    store = harness.open()
    created = await store.create("leader", LEASE)
    renewed = await store.update(created, {**LEASE, "renewTime": "2024-05-01T12:00:10.000000Z"})
    assert renewed.name == "leader"
    assert renewed.version != created.version
    assert renewed.data["renewTime"] == "2024-05-01T12:00:10.000000Z"
    again = await store.update(renewed, {**LEASE, "leaseTransitions": 4})
    assert len({created.version, renewed.version, again.version}) == 3
    assert await store.get("leader") == again


async def test_update_with_a_stale_version_conflicts_and_changes_nothing(
    harness: StoreHarness,
) -> None:
    mine, theirs = harness.open(), harness.open()
    created = await mine.create("leader", LEASE)
    taken = await theirs.update(created, {**LEASE, "holderIdentity": "replica-b"})
    with pytest.raises(errors.ConflictError):
        await mine.update(created, {**LEASE, "holderIdentity": "replica-a"})
    assert await mine.get("leader") == taken


async def test_update_of_a_deleted_record_conflicts(harness: StoreHarness) -> None:
    store = harness.open()
    created = await store.create("leader", LEASE)
    await store.delete(created)
    with pytest.raises(errors.ConflictError):
        await store.update(created, LEASE)
    assert await store.get("leader") is None


async def test_delete_is_compare_and_swap(harness: StoreHarness) -> None:
    store = harness.open()
    created = await store.create("members/replica-a", MEMBER)
    renewed = await store.update(created, {**MEMBER, "appliedEpoch": 8})
    with pytest.raises(errors.ConflictError):
        await store.delete(created)
    assert await store.get("members/replica-a") == renewed
    await store.delete(renewed)
    assert await store.get("members/replica-a") is None
    with pytest.raises(errors.ConflictError):
        await store.delete(renewed)
    recreated = await store.create("members/replica-a", MEMBER)
    assert recreated.version not in {created.version, renewed.version}


async def test_list_by_prefix_returns_only_matching_records_by_name(
    harness: StoreHarness,
) -> None:
    store = harness.open()
    await store.create("leader", LEASE)
    b = await store.create("members/replica-b", {**MEMBER, "holderIdentity": "replica-b"})
    a = await store.create("members/replica-a", MEMBER)
    await store.create("shardmap", SHARD_MAP)
    assert await store.list("members/") == [a, b]
    assert [r.name for r in await store.list()] == [
        "leader",
        "members/replica-a",
        "members/replica-b",
        "shardmap",
    ]
    assert await store.list("nothing/") == []


async def test_concurrent_creates_have_exactly_one_winner(harness: StoreHarness) -> None:
    contenders = [harness.open() for _ in range(4)]
    results = await asyncio.gather(
        *(
            store.create("leader", {**LEASE, "holderIdentity": f"replica-{i}"})
            for i, store in enumerate(contenders)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, records.Record)]
    assert len(winners) == 1, results
    assert all(isinstance(r, errors.ConflictError) for r in results if r not in winners)
    assert await contenders[0].get("leader") == winners[0]


async def test_concurrent_updates_of_one_version_have_exactly_one_winner(
    harness: StoreHarness,
) -> None:
    contenders = [harness.open() for _ in range(4)]
    created = await contenders[0].create("leader", LEASE)
    results = await asyncio.gather(
        *(
            store.update(created, {**LEASE, "holderIdentity": f"replica-{i}"})
            for i, store in enumerate(contenders)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, records.Record)]
    assert len(winners) == 1, results
    assert all(isinstance(r, errors.ConflictError) for r in results if r not in winners)
    assert await contenders[0].get("leader") == winners[0]


async def test_a_hanging_store_is_unavailable_within_the_timeout(
    harness: StoreHarness,
) -> None:
    healthy = harness.open()
    record = await healthy.create("leader", LEASE)
    timeout = 0.3
    store = harness.open(timeout=timeout)
    assert await store.get("leader") == record  # connected before the backend stalls
    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("get", lambda: store.get("leader")),
        ("create", lambda: store.create("other", LEASE)),
        ("update", lambda: store.update(record, LEASE)),
        ("delete", lambda: store.delete(record)),
        ("list", lambda: store.list()),
    ]
    loop = asyncio.get_running_loop()
    with harness.hanging():
        for what, call in calls:
            started = loop.time()
            with pytest.raises(errors.StoreUnavailableError):
                await call()
            assert loop.time() - started < timeout + 1.0, what
    # Timed-out writes may still land once the backend resumes (etcd queues them):
    # a timeout is ambiguous. What must hold: the same store answers again.
    await answering(store.list, what="the store to list again")
    fresh = await answering(
        lambda: store.create("after-hang", MEMBER), what="the store to create again"
    )
    assert await store.get("after-hang") == fresh


async def test_fenced_write_lands_only_while_the_fence_is_unchanged(
    harness: StoreHarness,
) -> None:
    leader, other = harness.open(), harness.open()
    fence = await leader.create("leader", LEASE)
    shard_map = await leader.update_fenced(None, SHARD_MAP, fence=fence, name="shardmap")
    assert await other.get("shardmap") == shard_map
    shard_map = await leader.update_fenced(shard_map, {**SHARD_MAP, "epoch": 9}, fence=fence)
    assert shard_map.data["epoch"] == 9

    # Another replica takes the lease over: the old leader's fence is stale.
    await other.update(fence, {**LEASE, "holderIdentity": "replica-b", "leaseTransitions": 4})
    with pytest.raises(errors.ConflictError):
        await leader.update_fenced(shard_map, {**SHARD_MAP, "epoch": 10}, fence=fence)
    with pytest.raises(errors.ConflictError):
        await leader.update_fenced(None, SHARD_MAP, fence=fence, name="members/replica-z")
    assert await other.get("shardmap") == shard_map
    assert await other.get("members/replica-z") is None


async def test_fenced_write_also_compares_the_record_itself(harness: StoreHarness) -> None:
    store = harness.open()
    fence = await store.create("leader", LEASE)
    shard_map = await store.create("shardmap", SHARD_MAP)
    newer = await store.update(shard_map, {**SHARD_MAP, "epoch": 9})
    with pytest.raises(errors.ConflictError):
        await store.update_fenced(shard_map, {**SHARD_MAP, "epoch": 10}, fence=fence)
    with pytest.raises(errors.ConflictError):
        await store.update_fenced(None, SHARD_MAP, fence=fence, name="shardmap")
    await store.delete(fence)
    with pytest.raises(errors.ConflictError):
        await store.update_fenced(newer, {**SHARD_MAP, "epoch": 10}, fence=fence)
    assert await store.get("shardmap") == newer


@pytest.mark.parametrize("harness", ["etcd3"], indirect=True)
async def test_etcd_cluster_keeps_working_after_a_member_is_killed(
    harness: StoreHarness, etcd3: Any
) -> None:
    store = harness.open()
    target = 20
    acknowledged: list[int] = []

    async def bump() -> None:
        # Read-modify-write until one compare-and-swap lands; timeouts are ambiguous,
        # so a write may land without being acknowledged (counted by the re-read).
        while True:
            current = await answering(lambda: store.get("counter"), what="the counter")
            assert current is not None
            value = int(current.data["value"]) + 1
            write = functools.partial(store.update, current, {"value": value})
            try:
                await answering(write, what=f"the counter's write of {value}")
            except errors.ConflictError:
                continue
            acknowledged.append(value)
            return

    await store.create("counter", {"value": 0})
    while not acknowledged or acknowledged[-1] < target:
        if len(acknowledged) == 5:
            etcd3.kill_member(0)
        await bump()
    assert etcd3.members[0].proc.poll() is not None  # it really is gone
    assert acknowledged == sorted(set(acknowledged))
    final = await harness.open().get("counter")
    assert final is not None and final.data["value"] == acknowledged[-1] == target
