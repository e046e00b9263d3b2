"""Sharding's timers (principal/_sharding.py) on loop time, over a fake coordinator: a map
is applied 0.05 s after a change (bursts coalesce), and a stand-in session goes home from
the fence loop's 0.25 s ticks: after STANDIN_SECONDS while its owner is cut off but up all
along, at the first tick STANDIN_MIN on once its owner has come back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from election import _membership as membership
from election import _shardmap as shardmap
from election import lease
from principal import _session as session_
from principal import _sharding as sharding_

R = lease.ReplicaId
EPOCH = 3
ENDPOINTS = {"p1": "10.0.0.1:8443", "p2": "10.0.0.2:8443"}
AGENTS = [f"edge-{n}" for n in range(10)]
MAP = shardmap.ShardMap(
    epoch=shardmap.Epoch(EPOCH),
    members=tuple((R(rid), endpoint) for rid, endpoint in ENDPOINTS.items()),
    published_by=R("p1"),
    token=lease.FencingToken(5),
)


class Coordinator:
    """What Sharding reads of election's Coordinator: the map, the live members (each
    renewing its record at every look), our registration; what it advertises."""

    def __init__(self, *members: str) -> None:
        self.shard_map = MAP
        self.members = {
            rid: membership.Member(R(rid), ENDPOINTS[rid], EPOCH, pid=1) for rid in members
        }
        self.applied: list[tuple[float, int]] = []

    def is_registered(self) -> bool:
        return True

    def live_members(self) -> list[membership.Member]:
        return list(self.members.values())

    def renewed_at(self, replica_id: str) -> float | None:
        return asyncio.get_running_loop().time() if replica_id in self.members else None

    def set_applied_epoch(self, epoch: int) -> None:
        self.applied.append((asyncio.get_running_loop().time(), epoch))

    async def map_changed(self) -> shardmap.ShardMap:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Registry:
    """The desired-state store's agent list: every agent, registered once."""

    async def watch_agents(self) -> AsyncIterator[list[str]]:
        yield AGENTS
        await asyncio.Event().wait()


def owned_by(replica: str) -> str:
    placed = MAP.build_ring(set(AGENTS))
    return next(agent for agent in AGENTS if placed.owner(agent) == replica)


async def start(
    coordinator: Coordinator, sessions: session_.SessionManager
) -> tuple[sharding_.Sharding, asyncio.Task[None]]:
    """p1's Sharding, running."""
    sharding = sharding_.Sharding(
        replica_id="p1",
        coordinator=coordinator,  # type: ignore[arg-type]
        desired=Registry(),  # type: ignore[arg-type]
        sessions=sessions,
    )
    return sharding, asyncio.create_task(sharding.run(), name="sharding")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def standin(agent: str) -> session_.Session:
    """A session p1 took for `agent` because the agent could not reach p2, its owner."""
    return session_.Session(
        agent=agent, mode="managed", session_id="s", epoch=EPOCH, standin_for="p2"
    )


async def test_a_change_is_applied_after_the_coalescing_pause() -> None:
    coordinator = Coordinator("p1", "p2")
    sharding, task = await start(coordinator, session_.SessionManager())
    try:
        await sharding.applied.wait()
    finally:
        await stop(task)
    assert coordinator.applied == [(0.05, EPOCH)]  # the agent list came at 0.0


async def test_a_standin_for_an_owner_up_all_along_goes_home_after_standin_seconds() -> None:
    loop = asyncio.get_running_loop()
    coordinator, sessions = Coordinator("p1", "p2"), session_.SessionManager()
    session = standin(owned_by("p2"))
    sessions.open(session)
    _, task = await start(coordinator, sessions)
    try:
        final = await session.outbox.get()
        assert loop.time() == sharding_.STANDIN_SECONDS == 10.0  # the fence loop's 40th tick
    finally:
        await stop(task)
    assert final is not None and final.redirect.owner_endpoint == ENDPOINTS["p2"]
    assert final.redirect.reason == "back to owner"
    assert session.close_label is session_.CloseReason.STANDIN_ENDED


async def test_a_standin_goes_home_at_the_first_tick_after_its_owner_came_back() -> None:
    loop = asyncio.get_running_loop()
    coordinator, sessions = Coordinator("p1"), session_.SessionManager()  # p2 is down
    session = standin(owned_by("p2"))
    sessions.open(session)
    _, task = await start(coordinator, sessions)
    try:
        await asyncio.sleep(2.9)
        assert not session.closed  # its owner has no member record: not back
        coordinator.members["p2"] = membership.Member(R("p2"), ENDPOINTS["p2"], EPOCH, pid=2)
        final = await session.outbox.get()
        assert loop.time() == 3.0  # the fence loop's next tick (STANDIN_MIN is long past)
    finally:
        await stop(task)
    assert final is not None and final.redirect.owner_replica_id == "p2"


async def test_an_owner_restarted_shortly_before_the_standin_is_back_at_standin_min() -> None:
    loop = asyncio.get_running_loop()
    coordinator, sessions = Coordinator("p1", "p2"), session_.SessionManager()
    _, task = await start(coordinator, sessions)
    try:
        await asyncio.sleep(1.0)
        coordinator.members["p2"] = membership.Member(R("p2"), ENDPOINTS["p2"], EPOCH, pid=2)
        await asyncio.sleep(1.0)  # the agent saw the old p2 fail, and asks p1 at 2.0 s
        session = standin(owned_by("p2"))
        sessions.open(session)
        final = await session.outbox.get()
        assert loop.time() == 3.0  # the first tick STANDIN_MIN after the stand-in began
    finally:
        await stop(task)
    assert final is not None and final.redirect.owner_replica_id == "p2"


async def test_an_owner_that_only_joined_before_the_standin_is_cut_off_not_back() -> None:
    # The cluster is starting: p1 notes its members before p2 has registered, p2 joins at
    # 1.0 s, and at 2.0 s an agent that cannot reach p2 asks p1 to stand in. p2 did not
    # come back from anything: sending the agent home at once would send it into the
    # partition (it did, in test_halfopen: 5 s connect timeouts, again and again).
    loop = asyncio.get_running_loop()
    coordinator, sessions = Coordinator("p1"), session_.SessionManager()
    _, task = await start(coordinator, sessions)
    try:
        await asyncio.sleep(1.0)
        coordinator.members["p2"] = membership.Member(R("p2"), ENDPOINTS["p2"], EPOCH, pid=1)
        await asyncio.sleep(1.0)
        session = standin(owned_by("p2"))
        sessions.open(session)
        final = await session.outbox.get()
        assert loop.time() == 2.0 + sharding_.STANDIN_SECONDS  # home only as for a partition
    finally:
        await stop(task)
    assert final is not None and final.redirect.owner_replica_id == "p2"
