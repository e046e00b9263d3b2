"""Last-seen presence for alerting, on a real Redis: what the owner exports per agent."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import prometheus_client as prom
import pytest

from mooring import _services as services
from principal import _presence as presence
from principal import _registry as registry
from principal import _session as session_
from proto import catalog


class Placed:
    """An applied ring as presence reads it: agent -> owner."""

    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners

    def owner(self, agent: str) -> str:
        return self.owners[agent]


class Routing:
    def __init__(self, owners: dict[str, str]) -> None:
        self.agents = set(owners)
        self.ring = Placed(owners)


@pytest.fixture
async def shared(redis_server: services.RedisServer) -> AsyncIterator[registry.SessionRegistry]:
    reg = registry.SessionRegistry(redis_server.url, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    try:
        yield reg
    finally:
        await reg.close()


def exported(reg: prom.CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["agent"]: s.value
        for f in reg.collect()
        if f.name == catalog.AGENT_LAST_SEEN.name
        for s in f.samples
    }


async def test_the_owner_exports_when_each_of_its_agents_was_last_connected(
    shared: registry.SessionRegistry,
) -> None:
    other = registry.SessionRegistry(shared.url, prefix=shared.prefix)
    try:
        # "far" is held by another replica, which renews it: presence says when.
        other.beat_blocking("p2", ttl=5)
        _, _, token, _ = await other.acquire("far", replica="p2", epoch=1, session="s")
        before = time.time()
        assert await other.renew_many({"far": token}, replica="p2") == {"far": True}
        sessions = session_.SessionManager()
        routing = Routing({"here": "p1", "far": "p1", "never": "p1", "theirs": "p2"})
        metrics = prom.CollectorRegistry()
        seen = presence.Presence(
            metrics,
            replica_id="p1",
            sessions=sessions,
            routing=routing,
            shared=shared,  # type: ignore[arg-type]
        )
        sessions.open(
            session_.Session(agent="here", mode="managed", session_id="x", epoch=1, token=1)
        )
        seen.refresh()
        # Not looked up in Redis yet: only the agent connected here has a series.
        assert set(exported(metrics)) == {"here"}
        await seen._refresh_remote()
        seen.refresh()
        got = exported(metrics)
        assert set(got) == {"here", "far", "never"}  # "theirs" is exported by its owner
        assert got["here"] >= before
        assert before - 1 <= got["far"] <= time.time()
        assert got["never"] == 0.0  # not seen within a day: the alert fires at once

        # The local session ends: it counts from when it closed, not from now.
        closed = time.time()
        sessions.on_release = seen.closed
        sessions.release(sessions.sessions["here"])
        await asyncio.sleep(0.05)
        seen.refresh()
        assert closed <= exported(metrics)["here"] < time.time() - 0.04
    finally:
        await other.close()


def test_without_redis_an_unseen_agent_counts_from_the_replica_start() -> None:
    started = time.time()
    metrics = prom.CollectorRegistry()
    seen = presence.Presence(
        metrics,
        replica_id="p1",
        sessions=session_.SessionManager(),
        routing=Routing({"a": "p1"}),  # type: ignore[arg-type]
        shared=None,
    )
    seen.refresh()
    assert started - 1 <= exported(metrics)["a"] <= time.time()
