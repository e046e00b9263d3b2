"""One conformance suite for the elector, run against every store adapter.

`harness` (tests/election/conftest.py) runs each test on: the memory store, a single-member
etcd, a 3-member etcd cluster, and the Kubernetes Lease store over real HTTP against the Lease
test server. Each candidate gets its own client; `harness.open_isolated()` puts a proxy in
front of one client so that its calls alone can hang (a partitioned or crashed replica) while
the others carry on. A crash is that partition plus cancelling the elector's task: its
release never reaches the store, so the others must wait for the lease to expire.

Leader work records each term's loop-time interval (`helpers.WorkLog`); every test checks
that no two terms overlap (I4).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import prometheus_client
import pytest

from election import _electing as electing
from election import _errors as errors
from election import _records as records
from election import _settings as settings_
from election import lease
from tests.election import _helpers as helpers
from tests.election.store_harness import Isolated, StoreHarness

# Short, valid timing. Lease durations persist as whole seconds (rounded up) and followers
# wait the persisted duration, so 1.0 s is the shortest lease that followers honour as is.
TIMING = settings_.ElectionSettings(
    lease_duration=1.0, renew_deadline=0.75, retry_period=0.15, request_timeout=0.3
)
SHARD_MAP = "shardmap"


class Candidate:
    """One replica: an elector on its own (isolated) client, with its own metrics."""

    def __init__(
        self,
        node: Isolated,
        name: str,
        *,
        clock: lease.WallClock = lease.utc_now,
    ) -> None:
        self.node = node
        self.registry = prometheus_client.CollectorRegistry()
        self.elector = electing.Elector(
            node.store,
            replica_id=lease.ReplicaId(name),
            settings=TIMING,
            registry=self.registry,
            clock=clock,
        )

    @property
    def renewals(self) -> float:
        return self.registry.get_sample_value("mooring_lease_renew_seconds_count") or 0.0


async def candidates(
    harness: StoreHarness,
    count: int,
    *,
    name: str = "r",
    clock: lease.WallClock = lease.utc_now,
) -> list[Candidate]:
    nodes = [
        await harness.open_isolated(store_timeout=TIMING.request_timeout) for _ in range(count)
    ]
    return [Candidate(node, f"{name}{i}", clock=clock) for i, node in enumerate(nodes)]


def electors(group: list[Candidate]) -> list[electing.Elector]:
    return [candidate.elector for candidate in group]


def the_leader(group: list[Candidate]) -> Candidate:
    leading = [candidate for candidate in group if candidate.elector.is_leader()]
    assert len(leading) == 1, [c.elector.replica_id for c in leading]
    return leading[0]


async def watch(seconds: float, check: Callable[[], None]) -> None:
    """Run `check` every 10 ms for `seconds` (an observation window, not a wait)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        check()
        await asyncio.sleep(0.01)


async def crash(candidate: Candidate, task: asyncio.Task[None]) -> None:
    """The replica dies: its connection goes silent, then its task is cancelled.

    The elector still tries to release the lease on the way out; that call hangs and times
    out, so nothing the dead replica sends reaches the store any more.
    """
    candidate.node.stall(True)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not candidate.elector.is_leader()


async def fenced_write(
    candidate: Candidate, fence: electing.Fence, data: dict[str, Any]
) -> records.Record:
    """Write the shard map under `fence`, as leader work does; retry a conflict with our own
    renewal (which moves the lease record) until the term ends."""
    store = candidate.node.store
    while True:
        current = await store.get(SHARD_MAP)
        try:
            return await store.update_fenced(current, data, fence=fence.lease(), name=SHARD_MAP)
        except errors.ConflictError:
            fence.check()  # still leading: our renewal moved the lease meanwhile


async def test_exactly_one_leader_among_three(harness: StoreHarness) -> None:
    group = await candidates(harness, 3)
    log = helpers.WorkLog()
    async with helpers.electing_all(electors(group), log):
        await helpers.until(lambda: len(log.running()) == 1, within=10, what="a leader")
        leader = the_leader(group)

        def one_leader() -> None:
            assert the_leader(group) is leader
            assert len(log.running()) == 1

        await watch(1.5 * TIMING.lease_duration, one_leader)  # renewals land; nobody else leads
        assert leader.renewals >= 3
        assert {c.elector.leader for c in group} == {leader.elector.replica_id}
        others = [c.elector for c in group if c is not leader]
        assert all(e.state is lease.State.FOLLOWER for e in others)
    assert len(log.terms) == 1
    assert all(c.elector.state is lease.State.STOPPED for c in group)


async def test_takeover_after_the_holder_crashes(harness: StoreHarness) -> None:
    group = await candidates(harness, 3)
    log = helpers.WorkLog()
    async with helpers.electing_all(electors(group), log) as tasks:
        await helpers.until(lambda: len(log.running()) == 1, within=10, what="a leader")
        old = the_leader(group)
        old_token = old.elector.fencing_token
        assert old_token is not None
        loop = asyncio.get_running_loop()
        died = loop.time()
        await crash(old, tasks[group.index(old)])
        took = (
            await helpers.until(
                lambda: any(c.elector.is_leader() for c in group if c is not old),
                within=10,
                what="a successor",
            )
            - died
        )
        new = the_leader(group)
        assert new.elector.fencing_token == old_token + 1
        record = await harness.open().get(lease.LEASE_RECORD)
        assert record is not None
        assert record.data["holderIdentity"] == new.elector.replica_id
        assert record.data["leaseTransitions"] == old_token + 1
        # Not before the lease expired (counted from the last renewal anyone saw land), and
        # without dawdling after it.
        assert TIMING.lease_duration - TIMING.retry_period - 0.05 < took
        assert took < 3 * TIMING.lease_duration
    log.assert_no_overlap()
    assert [term.replica for term in log.terms] == [old.elector.replica_id, new.elector.replica_id]


async def test_a_hung_holder_stops_its_work_before_a_successor_starts(
    harness: StoreHarness,
) -> None:
    group = await candidates(harness, 2)
    log = helpers.WorkLog()
    async with helpers.electing_all(electors(group), log):
        await helpers.until(lambda: len(log.running()) == 1, within=10, what="a leader")
        old = the_leader(group)
        old.node.stall(True)  # every call it makes now hangs until the request timeout
        await helpers.until(lambda: len(log.terms) == 2, within=10, what="a second term")
        first, second = log.terms
        assert first.replica == old.elector.replica_id != second.replica
        assert first.ended is not None and first.ended < second.started
        assert not old.elector.is_leader()
        assert second.token == first.token + 1
        # The partition heals: the old holder's late writes are refused, and it follows.
        old.node.stall(False)
        await helpers.until(
            lambda: old.elector.leader == second.replica, within=10, what="old holder follows"
        )
        assert old.elector.state is lease.State.FOLLOWER
        assert len(log.running()) == 1
    log.assert_no_overlap()


async def test_release_makes_takeover_immediate(harness: StoreHarness) -> None:
    group = await candidates(harness, 2)
    log = helpers.WorkLog()
    async with helpers.electing_all(electors(group), log) as tasks:
        await helpers.until(lambda: len(log.running()) == 1, within=10, what="a leader")
        old = the_leader(group)
        other = next(c for c in group if c is not old)
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        old.elector.stop()
        await tasks[group.index(old)]
        assert old.elector.state is lease.State.STOPPED
        took = (
            await helpers.until(other.elector.is_leader, within=10, what="the successor") - stopped
        )
        assert took < TIMING.lease_duration / 2  # well before the lease could have expired
    log.assert_no_overlap()
    assert [term.token for term in log.terms] == [log.terms[0].token, log.terms[0].token + 1]


async def test_a_stale_fencing_token_is_refused_by_the_fenced_write(
    harness: StoreHarness,
) -> None:
    group = await candidates(harness, 2)
    log = helpers.WorkLog()
    async with helpers.electing_all(electors(group), log) as tasks:
        await helpers.until(lambda: len(log.running()) == 1, within=10, what="a leader")
        old = the_leader(group)
        old_fence = log.fences[0]
        await fenced_write(old, old_fence, {"epoch": 1, "fencingToken": old_fence.token})
        stale_lease = old_fence.lease()  # the lease as the old leader last wrote it
        await crash(old, tasks[group.index(old)])
        await helpers.until(lambda: len(log.terms) == 2, within=10, what="a successor")
        new = the_leader(group)
        new_fence = log.fences[1]
        assert new_fence.token > old_fence.token
        published = await fenced_write(
            new, new_fence, {"epoch": 2, "fencingToken": new_fence.token}
        )

        # The old leader's process comes back (a zombie) and writes with its stale fence.
        assert not old_fence.valid
        with pytest.raises(lease.StaleFenceError):
            old_fence.check()
        old.node.stall(False)
        zombie = old.node.store
        with pytest.raises(errors.ConflictError):
            await zombie.update_fenced(published, {"epoch": 3}, fence=stale_lease)
        with pytest.raises(errors.ConflictError):
            await zombie.update_fenced(None, {"epoch": 3}, fence=stale_lease, name="other-map")
        reader = harness.open()
        assert await reader.get(SHARD_MAP) == published
        assert await reader.get("other-map") is None
        record = await reader.get(lease.LEASE_RECORD)
        assert record is not None and record.data["holderIdentity"] == new.elector.replica_id
    log.assert_no_overlap()


async def test_a_wall_clock_jump_causes_no_early_takeover(harness: StoreHarness) -> None:
    epoch = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    back = itertools.count()
    ahead = itertools.count()

    def falling_clock() -> datetime.datetime:  # the holder's stamps leap a day back per call
        return epoch - datetime.timedelta(days=next(back))

    def racing_clock() -> datetime.datetime:  # the followers' clocks leap an hour ahead
        return epoch + datetime.timedelta(hours=next(ahead))

    [holder] = await candidates(harness, 1, name="holder", clock=falling_clock)
    followers = await candidates(harness, 2, name="follower", clock=racing_clock)
    log = helpers.WorkLog()
    async with helpers.electing_all([holder.elector], log):
        await helpers.until(holder.elector.is_leader, within=10, what="the holder")
        token = holder.elector.fencing_token
        async with helpers.electing_all(electors(followers), log):
            await helpers.until(
                lambda: all(f.elector.leader == holder.elector.replica_id for f in followers),
                within=10,
                what="followers see the holder",
            )

            def holder_leads() -> None:
                assert holder.elector.is_leader()
                assert not any(f.elector.is_leader() for f in followers)

            # By the stamps, the lease expired days ago; by what the followers saw, it is live.
            await watch(1.5 * TIMING.lease_duration, holder_leads)
            record = await harness.open().get(lease.LEASE_RECORD)
            assert record is not None
            assert record.data["renewTime"] < record.data["acquireTime"]  # time ran backwards
            assert holder.elector.fencing_token == token
    assert len(log.terms) == 1


def _raft_roles(endpoints: list[str]) -> tuple[int, list[int]]:
    """(index of the raft leader, indices of the other members), from each member's status."""
    leader, others = -1, []
    for i, endpoint in enumerate(endpoints):
        request = urllib.request.Request(
            f"http://{endpoint}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            status = json.load(response)
        if status["leader"] == status["header"]["member_id"]:
            leader = i
        else:
            others.append(i)
    assert leader >= 0 and len(others) == len(endpoints) - 1, (leader, others)
    return leader, others


@pytest.mark.parametrize("harness", ["etcd3"], indirect=True)
async def test_killing_a_raft_follower_member_keeps_the_same_leader_renewing(
    harness: StoreHarness, etcd3: Any
) -> None:
    """A 3-member cluster loses a member that is not its raft leader: with quorum and raft
    leadership intact, the same leader keeps renewing through the survivors."""
    group = await candidates(harness, 3)
    log = helpers.WorkLog()
    async with helpers.electing_all(electors(group), log):
        await helpers.until(lambda: len(log.running()) == 1, within=10, what="a leader")
        leader = the_leader(group)
        _, raft_followers = await asyncio.to_thread(_raft_roles, etcd3.endpoints)
        before = leader.renewals
        await asyncio.to_thread(etcd3.kill_member, raft_followers[0])
        assert etcd3.members[raft_followers[0]].proc.poll() is not None

        def same_leader() -> None:
            assert the_leader(group) is leader
            assert len(log.running()) == 1

        await watch(1.5 * TIMING.lease_duration, same_leader)
        assert leader.renewals >= before + 4  # renewals kept landing through the survivors
        record = await harness.open(timeout=2.0).get(lease.LEASE_RECORD)
        assert record is not None and record.data["holderIdentity"] == leader.elector.replica_id
    assert len(log.terms) == 1


@pytest.mark.parametrize("harness", ["etcd3"], indirect=True)
async def test_killing_the_raft_leader_member_keeps_at_most_one_leader(
    harness: StoreHarness, etcd3: Any
) -> None:
    """Killing etcd's raft leader stalls writes for a raft election, which may outlast the
    renew deadline: the leader may stop (I4), but never two lead, and a leader (the same or
    a successor) is renewing again once the cluster has a new raft leader."""
    group = await candidates(harness, 3)
    log = helpers.WorkLog()
    async with helpers.electing_all(electors(group), log):
        await helpers.until(lambda: len(log.running()) == 1, within=10, what="a leader")
        raft_leader, _ = await asyncio.to_thread(_raft_roles, etcd3.endpoints)
        await asyncio.to_thread(etcd3.kill_member, raft_leader)
        assert etcd3.members[raft_leader].proc.poll() is not None
        base = {id(c): c.renewals for c in group}

        def leading_again() -> bool:
            leading = [c for c in group if c.elector.is_leader()]
            assert len(leading) <= 1 and len(log.running()) <= 1
            return bool(leading) and leading[0].renewals >= base[id(leading[0])] + 3

        await helpers.until(leading_again, within=10, what="a leader renewing again")
        leader = the_leader(group)
        record = await harness.open(timeout=2.0).get(lease.LEASE_RECORD)
        assert record is not None and record.data["holderIdentity"] == leader.elector.replica_id
        assert record.data["leaseTransitions"] == log.terms[-1].token
    log.assert_no_overlap()
