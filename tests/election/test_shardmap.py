"""Shard map: (de)serialization, fenced publication by the leader, application everywhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import prometheus_client
import pytest

from election import _cluster as cluster
from election import _errors as errors
from election import _etcd as etcd
from election import _etcdrecords as etcdrecords
from election import _records as records
from election import _shardmap as shardmap
from election import lease
from tests.election import _helpers as helpers

FAST = helpers.FAST
R = lease.ReplicaId


def a_map(epoch: int = 3, n: int = 2) -> shardmap.ShardMap:
    return shardmap.ShardMap(
        epoch=shardmap.Epoch(epoch),
        members=tuple((R(f"r{i}"), f"10.0.0.{i}:8443") for i in reversed(range(n))),
        published_by=R("r0"),
        token=lease.FencingToken(5),
        epsilon=0.25,
        published_at="2030-01-01T00:00:00.000000Z",
    )


# -- the value --


def test_map_round_trips_through_json_sorted_by_replica() -> None:
    original = a_map()
    assert original.replica_ids == ("r0", "r1")
    assert shardmap.ShardMap.from_json(original.to_json()) == original
    assert shardmap.ShardMap.from_data(original.to_data()) == original
    assert original.endpoint_of("r1") == "10.0.0.1:8443"
    assert original.endpoint_of("nope") is None


def test_map_builds_the_ring_from_its_members() -> None:
    agents = [f"agent-{i}" for i in range(40)]
    assignment = a_map(n=4).build_ring(agents)
    assert set(assignment.replicas) == {"r0", "r1", "r2", "r3"}
    assert {assignment.owner(agent) for agent in agents} <= set(assignment.replicas)
    assert max(assignment.loads().values()) <= 13  # ceil(1.25 * 40 / 4)


def test_map_size_is_linear_in_replicas() -> None:
    small, large = len(a_map(n=10).to_json()), len(a_map(n=100).to_json())
    assert large < 11 * small
    assert large < 100 * 60


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "not json",
        '{"epoch": 1}',
        '{"epoch": "1", "members": [], "publishedBy": "r", "fencingToken": 1}',
        '{"epoch": 0, "members": [], "publishedBy": "r", "fencingToken": 1}',
        '{"epoch": 1, "members": [{"id": "a"}], "publishedBy": "r", "fencingToken": 1}',
        '{"epoch": 1, "members": [{"id": "a", "endpoint": "x:1"}, {"id": "a", "endpoint": "y:1"}],'
        ' "publishedBy": "r", "fencingToken": 1}',
    ],
)
def test_malformed_maps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        shardmap.ShardMap.from_json(text)


# -- publication --


async def lease_record(store: records.RecordStore) -> records.Record:
    return await store.create(lease.LEASE_RECORD, {"holderIdentity": "r0"})


@pytest.mark.parametrize("fenced", [True, False], ids=["fenced-store", "plain-store"])
async def test_publish_bumps_the_epoch_only_on_change(fenced: bool) -> None:
    store: records.RecordStore = helpers.stores(1)[0]
    if not fenced:
        store = helpers.PlainStore(store)
    fence = helpers.FakeFence(token=4, holder="r0", record=await lease_record(store))
    two = [("r1", "h1:1"), ("r0", "h0:1")]
    first = await shardmap.publish(store, fence=fence, members=two, settings=FAST)  # type: ignore[arg-type]
    assert (first.epoch, first.replica_ids, first.token) == (1, ("r0", "r1"), 4)
    again = await shardmap.publish(store, fence=fence, members=two, settings=FAST)  # type: ignore[arg-type]
    assert again.epoch == 1
    three = [*two, ("r2", "h2:1")]
    bumped = await shardmap.publish(store, fence=fence, members=three, settings=FAST)  # type: ignore[arg-type]
    assert bumped.epoch == 2
    stored = await store.get(shardmap.MAP_RECORD)
    assert stored is not None and shardmap.ShardMap.from_data(stored.data) == bumped


@pytest.mark.parametrize("fenced", [True, False], ids=["fenced-store", "plain-store"])
async def test_stale_fencing_token_is_refused(fenced: bool) -> None:
    store: records.RecordStore = helpers.stores(1)[0]
    if not fenced:
        store = helpers.PlainStore(store)
    leader_record = await lease_record(store)
    newer = helpers.FakeFence(token=7, holder="r1", record=leader_record)
    published = await shardmap.publish(store, fence=newer, members=[("r1", "h:1")], settings=FAST)  # type: ignore[arg-type]
    older = helpers.FakeFence(token=6, holder="r0", record=leader_record)
    with pytest.raises(lease.StaleFenceError, match="above ours"):
        await shardmap.publish(store, fence=older, members=[("r0", "h:0")], settings=FAST)  # type: ignore[arg-type]
    stored = await store.get(shardmap.MAP_RECORD)
    assert stored is not None and shardmap.ShardMap.from_data(stored.data) == published


async def test_fenced_store_refuses_a_fence_whose_lease_moved_on() -> None:
    store = helpers.stores(1)[0]
    leader_record = await lease_record(store)
    fence = helpers.FakeFence(token=1, holder="r0", record=leader_record)
    await store.update(leader_record, {"holderIdentity": "r1"})  # a successor took the lease
    with pytest.raises(errors.ConflictError):
        await shardmap.publish(store, fence=fence, members=[("r0", "h:0")], settings=FAST)  # type: ignore[arg-type]
    assert await store.get(shardmap.MAP_RECORD) is None


async def test_an_expired_term_publishes_nothing() -> None:
    store = helpers.stores(1)[0]
    fence = helpers.FakeFence(token=1, holder="r0", record=await lease_record(store), valid=False)
    with pytest.raises(lease.StaleFenceError):
        await shardmap.publish(store, fence=fence, members=[("r0", "h:0")], settings=FAST)  # type: ignore[arg-type]
    assert await store.get(shardmap.MAP_RECORD) is None


# -- coordinators --


@contextlib.asynccontextmanager
async def coordinators(
    stores: list[records.RecordStore], registries: list[prometheus_client.CollectorRegistry]
) -> AsyncIterator[list[cluster.Coordinator]]:
    coords = [
        cluster.Coordinator(
            store,
            replica_id=R(f"r{i}"),
            endpoint=f"r{i}:8443",
            registry=registry,
            settings=FAST,
            metrics_address=f"127.0.0.1:91{i:02d}",
        )
        for i, (store, registry) in enumerate(zip(stores, registries, strict=True))
    ]
    async with contextlib.AsyncExitStack() as stack:
        for coord in coords:
            await stack.enter_async_context(coord)
        yield coords


def converged(coords: list[cluster.Coordinator], ids: list[str]) -> bool:
    maps = [c.shard_map for c in coords]
    return all(m is not None and list(m.replica_ids) == ids for m in maps) and (
        len({m.epoch for m in maps if m is not None}) == 1
    )


async def test_coordinators_elect_publish_and_follow_membership() -> None:
    stores = helpers.stores(3)
    registries = [prometheus_client.CollectorRegistry() for _ in stores]
    async with coordinators(list(stores), registries) as coords:
        await helpers.until(
            lambda: converged(coords, ["r0", "r1", "r2"]), within=10, what="map of 3"
        )
        leaders = [c for c in coords if c.is_leader()]
        assert len(leaders) == 1
        leader = leaders[0]
        assert {c.leader for c in coords} == {leader.replica_id}
        token = leader.fencing_token
        assert token is not None and all(c.fencing_token is None for c in coords if c is not leader)
        first = coords[0].shard_map
        assert first is not None and first.published_by == leader.replica_id
        assert first.token == token

        for coord in coords:
            coord.set_applied_epoch(first.epoch)
        await helpers.until(
            lambda: all(m.applied_epoch == first.epoch for m in coords[0].live_members())
        )

        # A follower leaves: a new epoch without it, applied by all who remain.
        follower = next(c for c in coords if c is not leader)
        rest = [c for c in coords if c is not follower]
        waiting = asyncio.ensure_future(rest[0].map_changed())
        await follower.shutdown()
        await follower.shutdown()  # idempotent
        ids = sorted(c.replica_id for c in rest)
        await helpers.until(lambda: converged(rest, ids), within=5, what="map without follower")
        assert (await asyncio.wait_for(waiting, 1)).epoch == first.epoch + 1

        # The leader leaves: the successor takes over at once and publishes under a newer token.
        await leader.shutdown()
        survivor = next(c for c in rest if c is not leader)
        await helpers.until(survivor.is_leader, within=FAST.lease_duration / 2, what="successor")
        await helpers.until(
            lambda: converged([survivor], [survivor.replica_id]), within=5, what="solo map"
        )
        final = survivor.shard_map
        assert final is not None and final.epoch == first.epoch + 2
        assert final.token > first.token

        registry = registries[coords.index(survivor)]
        assert registry.get_sample_value("mooring_leader") == 1.0
        assert registry.get_sample_value("mooring_members_live") == 1.0
        assert registry.get_sample_value("mooring_shard_epoch") == final.epoch
        assert registry.get_sample_value("mooring_lease_transitions_total") == 1.0
    assert not survivor.is_leader()


async def test_coordinator_on_map_callback_and_shutdown_before_start() -> None:
    store = helpers.stores(1)[0]
    applied: list[int] = []
    coord = cluster.Coordinator(
        store,
        replica_id=R("solo"),
        endpoint="solo:1",
        registry=prometheus_client.CollectorRegistry(),
        settings=FAST,
        on_map=lambda m: applied.append(m.epoch),
    )
    await coord.shutdown()  # never started: nothing to do
    fresh = cluster.Coordinator(
        store,
        replica_id=R("solo"),
        endpoint="solo:1",
        registry=prometheus_client.CollectorRegistry(),
        settings=FAST,
        on_map=lambda m: applied.append(m.epoch),
    )
    async with fresh:
        await helpers.until(lambda: applied == [1], what="epoch 1 applied")
        assert fresh.is_registered()


# -- real etcd --


@pytest.mark.integration
async def test_coordinators_on_real_etcd(etcd, prefix: str) -> None:  # type: ignore[no-untyped-def]
    kvs = [etcd_kv(etcd) for _ in range(2)]
    for kv in kvs:
        await kv.connect()
    stores: list[records.RecordStore] = [
        etcdrecords.EtcdRecordStore(kv, prefix=prefix + "/") for kv in kvs
    ]
    registries = [prometheus_client.CollectorRegistry() for _ in stores]
    try:
        async with coordinators(stores, registries) as coords:
            await helpers.until(lambda: converged(coords, ["r0", "r1"]), within=10, what="map")
            leader = next(c for c in coords if c.is_leader())
            fence = leader.fence
            assert fence is not None
            stale = helpers.FakeFence(token=fence.token, holder="r0", record=fence.lease())
            await leader.shutdown()  # releases: the lease record moves on
            with pytest.raises(errors.ConflictError):
                await shardmap.publish(
                    stores[0],
                    fence=stale,
                    members=[("x", "x:1")],
                    settings=FAST,  # type: ignore[arg-type]
                )
            other = next(c for c in coords if c is not leader)
            await helpers.until(lambda: converged([other], [other.replica_id]), within=5)
    finally:
        for store in stores:
            await store.close()


def etcd_kv(cluster_) -> etcd.EtcdKV:  # type: ignore[no-untyped-def]
    return etcd.EtcdKV(cluster_.endpoints, timeout=FAST.request_timeout)


async def test_shutdown_ladder_is_bounded_when_the_store_hangs() -> None:
    store = helpers.stores(1)[0]
    coord = cluster.Coordinator(
        store,
        replica_id=R("solo"),
        endpoint="solo:1",
        registry=prometheus_client.CollectorRegistry(),
        settings=FAST,
    )
    async with coord:
        await helpers.until(lambda: coord.shard_map is not None, what="a map")
        assert coord.is_leader()
        store.hang = True  # release and leave now block until their timeouts
        joined = asyncio.create_task(coord.join())  # as a replica's supervisor waits
        loop = asyncio.get_running_loop()
        started = loop.time()
        await coord.shutdown(grace=0.1)
        assert loop.time() - started < 0.1 + 2 * FAST.request_timeout + 0.3
        assert not coord.is_leader()
        store.hang = False
        assert await joined is None  # cancelled by the ladder: stopped, not failed


def test_the_leader_maps_only_members_that_can_serve_while_any_can() -> None:
    from election import _membership as membership

    def member(rid: str, **extra: object) -> membership.Member:
        return membership.Member(replica_id=R(rid), endpoint=f"{rid}:1", extra=extra)

    every = [("r0", "r0:1"), ("r1", "r1:1"), ("r2", "r2:1")]
    live = [member("r0"), member("r1", serving=False), member("r2", serving=True)]
    assert not live[1].serving and live[0].serving and live[2].serving
    settled = {"r0": 0.0, "r1": 0.0, "r2": 0.0}
    assert shardmap._mapped(live, settled, 10.0) == ([("r0", "r0:1"), ("r2", "r2:1")], False)
    # r1 has only just been cut off: others may follow (a Redis outage fences everyone
    # within a fraction of a second); look again shortly.
    assert shardmap._mapped(live, {**settled, "r1": 9.5}, 10.0) == (every, True)
    # Those serving only just started to (Redis came back for everyone): wait and see,
    # rather than hand every agent to the first one back.
    assert shardmap._mapped(live, {**settled, "r0": 9.9, "r2": 9.8}, 10.0) == (every, True)
    # Nobody can hold an agent (Redis is down for all): moving them helps no one.
    cut_off = [member("r0", serving=False), member("r1", serving=False)]
    assert shardmap._mapped(cut_off, {"r0": 0.0, "r1": 0.0}, 10.0) == (every[:2], False)
