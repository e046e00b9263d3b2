"""The active-active cluster on real etcd, Redis and processes: 3 replicas, 60 agents.

Every agent ends up on its owner; scaling out and in reconnects exactly the agents
whose owner changed; a SIGKILLed replica's agents move; a Redis restart heals within
5 s; and the session history never shows two replicas serving one agent (I1).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos import invariants
from election import _ring as ring
from election import _shardmap as shardmap
from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_
from mooring import _status as status_
from principal import _history as history
from tests._poll import wait_for
from tests._procs import mooring

pytestmark = pytest.mark.e2e

AGENTS = 60
# replica -> monotonic time it was SIGKILLed (which closes its open sessions)
CRASHES: dict[str, float] = {}
LAST: dict[str, Any] = {}  # the last status seen, for failure messages


def status(directory: Path) -> dict[str, Any]:
    return json.loads(mooring("status", "--json", "--dir", str(directory)).stdout)


def converged(directory: Path, replicas: int) -> dict[str, Any] | None:
    """Status once every agent is connected to its owner under one epoch, else None."""
    got = status(directory)
    live = [r for r in got["replicas"] if r["live"]]
    agents = got["agents"]
    if len(live) != replicas or len(agents) != AGENTS:
        return None
    off = [
        a for a in agents if not (a["connected"] and a["owner"] and a["owner"] == a["connected_to"])
    ]
    LAST["off"] = off
    if off:
        return None
    return got


def wait_converged(
    directory: Path, replicas: int, *, newer_than: int = -1, timeout: float = 30
) -> dict[str, Any]:
    """Wait for `converged` under an epoch above `newer_than`; say who is off on failure."""

    def ready() -> dict[str, Any] | None:
        got = converged(directory, replicas)
        return got if got is not None and got["epoch"] > newer_than else None

    try:
        return wait_for(ready, timeout=timeout, interval=0.3, what=f"converged on {replicas}")
    except AssertionError as err:
        raise AssertionError(f"{err}; off their owner: {LAST.get('off')!r:.1500}") from None


def fleet_status(directory: Path) -> dict[str, dict[str, Any]]:
    """Agent name -> what the fleet process reports about it (its status file)."""
    got = status_.fleet_agents(state_.load(directory))
    assert got, "the fleet's status file is missing or stale"
    return got


def sessions(got: dict[str, Any]) -> dict[str, int]:
    return {a["name"]: int(a["sessions"]) for a in got["agents"]}


def owners(got: dict[str, Any]) -> dict[str, str]:
    return {a["name"]: a["owner"] for a in got["agents"]}


def check_history(directory: Path, *, crashed: dict[str, float] | None = None) -> int:
    events = history.load_many(sorted((directory / "history").glob("*.jsonl")))
    faults = [{"event": "kill-done", "target": r, "t": t} for r, t in (crashed or {}).items()]
    violations = invariants.single_owner(events, faults)
    assert not violations, "\n".join(str(v) for v in violations[:10])
    return len(events)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("ha") / "cluster"
    mooring("up", "--detach", "--replicas", "3", "--agents", str(AGENTS), "--dir", str(directory))
    try:
        yield directory
    finally:
        mooring("down", "--dir", str(directory), check=False)
        for handle in state_.load(directory).handles():
            if handle is not None and processes.alive(handle):
                os.kill(handle.pid, signal.SIGKILL)


def test_scale_out_and_in_moves_only_the_agents_whose_owner_changed(cluster: Path) -> None:
    before = wait_converged(cluster, 3, timeout=60)
    loads = [r["agents"] for r in before["replicas"]]
    assert sum(loads) == AGENTS and max(loads) <= 1.25 * AGENTS / 3 + 1

    mooring("scale", "--replicas", "4", "--dir", str(cluster))
    after = wait_converged(cluster, 4, newer_than=before["epoch"])
    moved = {a for a, o in owners(after).items() if owners(before)[a] != o}
    assert moved, "scale-out moved nobody"
    assert len(moved) <= 1.1 * AGENTS / 4 + 3
    reconnected = {a for a, n in sessions(after).items() if n != sessions(before)[a]}
    assert reconnected == moved
    assert all(sessions(after)[a] == sessions(before)[a] + 1 for a in moved)
    print(
        f"\nscale 3->4: {len(moved)}/{AGENTS} agents moved (1/(n+1) = {AGENTS / 4:.0f}), loads {loads}"
    )

    mooring("scale", "--replicas", "3", "--dir", str(cluster))
    back = wait_converged(cluster, 3, newer_than=after["epoch"])
    moved_back = {a for a, o in owners(back).items() if owners(after)[a] != o}
    assert moved_back and all(owners(after)[a] == "p4" for a in moved_back)
    reconnected = {a for a, n in sessions(back).items() if n != sessions(after)[a]}
    assert reconnected == moved_back
    print(
        f"scale 4->3: {len(moved_back)} agents moved back; events checked: {check_history(cluster)}"
    )


def test_sigkill_of_a_replica_moves_its_agents(cluster: Path) -> None:
    before = wait_converged(cluster, 3)
    victim = next(r for r in state_.load(cluster).replicas if r.id == "p2")
    assert victim.process is not None
    its_agents = {a for a, o in owners(before).items() if o == "p2"}
    assert its_agents, "p2 owned no agent: nothing would be tested"
    # Each of p2's agents was told where to go if p2 fails: the owner it has in the ring
    # without p2 (the hint follows map changes, so wait for the last one to arrive).
    endpoints = {r.id: r.endpoint for r in state_.load(cluster).replicas}
    without_p2 = ring.Ring(owners(before), ["p1", "p3"], epsilon=shardmap.DEFAULT_EPSILON)
    expected = {a: endpoints[without_p2.owner(a)] for a in its_agents}

    def hinted() -> bool:
        got = fleet_status(cluster)
        return all(got[a]["standby"] == expected[a] for a in its_agents)

    wait_for(hinted, timeout=5, interval=0.2, what="every agent of p2 told its standby")
    os.kill(victim.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    CRASHES["p2"] = killed_at
    after = wait_converged(cluster, 2, newer_than=before["epoch"])
    print(
        f"\nSIGKILL p2: its {len(its_agents)} agents on new owners {time.monotonic() - killed_at:.1f}s later"
    )
    moved = {a for a, o in owners(after).items() if owners(before)[a] != o}
    assert its_agents <= moved
    # ...and that is where the new map put them: nobody moved twice.
    assert {a: endpoints[owners(after)[a]] for a in its_agents} == expected
    assert all(sessions(after)[a] == sessions(before)[a] + 1 for a in its_agents)
    unaffected = {a for a in owners(before) if a not in moved}
    assert all(sessions(after)[a] == sessions(before)[a] for a in unaffected)
    check_history(cluster, crashed=CRASHES)
    mooring("scale", "--replicas", "3", "--dir", str(cluster))  # restarts p2
    wait_converged(cluster, 3, newer_than=after["epoch"])
    check_history(cluster, crashed=CRASHES)


def remote_status(state: state_.ClusterState) -> dict[str, Any]:
    """`mooring status --json` read from etcd and Redis alone (who holds which agent)."""
    out = mooring("status", "--json", "--coordination", state.coordination, "--redis", state.redis)
    got: dict[str, Any] = json.loads(out.stdout)
    return got


def test_status_from_the_stores_alone_agrees(cluster: Path) -> None:
    local = wait_converged(cluster, 3)
    state = state_.load(cluster)

    def remote() -> dict[str, Any] | None:
        got = remote_status(state)
        return got if got["agents_on_owner"] == AGENTS else None

    got = wait_for(remote, timeout=15, interval=0.3, what="remote status with every agent held")
    assert got["leader"] == local["leader"]
    assert got["epoch"] == local["epoch"]
    assert {a["name"]: a["owner"] for a in got["agents"]} == owners(local)
    assert sorted(r["id"] for r in got["replicas"] if r["live"]) == ["p1", "p2", "p3"]


def test_an_etcd_outage_costs_no_session_while_redis_confirms_the_holds(cluster: Path) -> None:
    """etcd frozen for longer than the lease and the renew deadline: no replica can renew
    its member record or the leader its lease, but Redis still confirms who holds which
    agent, so every replica goes on serving its sessions (it used to close them all about
    2 s in, and the agents stayed away until after etcd was back)."""
    before = wait_converged(cluster, 3)
    state = state_.load(cluster)
    etcd = state.etcd[0].process
    assert etcd is not None
    sessions_before = {n: v["sessions"] for n, v in fleet_status(cluster).items()}
    dropped: list[dict[str, Any]] = []
    processes.stop_signal(etcd.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 8.0  # lease 4 s, renew deadline 3 s
        while time.monotonic() < deadline:
            seen = fleet_status(cluster)
            dropped += [dict(v, name=n) for n, v in seen.items() if not v.get("connected")]
            time.sleep(0.2)
    finally:
        processes.stop_signal(etcd.pid, signal.SIGCONT)
    assert dropped == []  # every agent connected throughout
    # Not one new session: the agents never noticed.
    assert {n: v["sessions"] for n, v in fleet_status(cluster).items()} == sessions_before
    after = wait_converged(cluster, 3, timeout=20)
    assert owners(after) == owners(before)
    check_history(cluster, crashed=CRASHES)


def test_redis_restart_heals_within_five_seconds(cluster: Path) -> None:
    before = wait_converged(cluster, 3)
    state = state_.load(cluster)
    assert state.redis_server is not None and state.redis_server.process is not None
    port = int(state.redis_server.endpoint.rpartition(":")[2])
    os.kill(state.redis_server.process.pid, signal.SIGKILL)
    time.sleep(1.0)  # an outage of a second: Redis is away, not merely slow
    password = urllib.parse.urlsplit(state.redis).password  # `mooring up` sets one
    assert password
    replacement = services.RedisServer(
        Path(state.dir) / "redis-restarted", port=port, password=password
    ).start()
    back_at = time.monotonic()
    try:
        # Healed means the new, empty Redis holds an entry for every agent again, each
        # by the agent's owner (read from Redis itself, not from the agents' view)...
        def held() -> dict[str, Any] | None:
            got = remote_status(state)
            return got if got["agents_on_owner"] == AGENTS else None

        wait_for(
            held, timeout=15, interval=0.2, what="every agent held by its owner in the new Redis"
        )
        # ...and every agent is connected to that owner.
        after = wait_converged(cluster, 3, timeout=15)
        healed = time.monotonic() - back_at
        assert healed <= 5.0, f"took {healed:.1f}s after Redis returned"
        assert owners(after) == owners(before)
        print(
            f"\nredis restart: all {AGENTS} agents held and on their owners {healed:.2f}s after Redis returned"
        )
        check_history(cluster, crashed=CRASHES)
    finally:
        replacement.stop()
