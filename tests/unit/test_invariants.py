"""Each invariant checker catches what it claims: planted violations fail, clean runs pass."""

from __future__ import annotations

import math
from typing import Any

import pytest

from chaos import invariants

pytestmark = pytest.mark.unit


def ev(t: float, what: str, replica: str, token: int, *, agent: str = "a1", pid: int = 0) -> dict:
    return {
        "t": t,
        "wall": 1_000_000 + t,
        "ev": what,
        "replica": replica,
        "agent": agent,
        "token": token,
        "session": f"{replica}-{token}-{pid}",
        "pid": pid or hash(replica) % 1000,
        "epoch": 1,
    }


def handoff(close_a: float, open_b: float, *, token_b: int = 2) -> list[dict]:
    return [
        ev(0.0, "open", "p1", 1),
        ev(close_a, "close", "p1", 1),
        ev(open_b, "open", "p2", token_b),
        ev(9.0, "close", "p2", token_b),
    ]


# ----------------------------------------------------------------------------- I1
def test_i1_a_clean_handoff_passes() -> None:
    assert invariants.single_owner(handoff(1.0, 1.1)) == []


def test_i1_catches_two_replicas_holding_one_agent() -> None:
    (v,) = invariants.single_owner(handoff(1.5, 1.2))
    assert v.invariant == "I1" and v.subject == "a1" and "300.0 ms" in v.message


def test_i1_catches_a_token_granted_twice() -> None:
    events = [ev(0.0, "open", "p1", 7), ev(1.0, "close", "p1", 7), ev(2.0, "open", "p2", 7)]
    assert any("granted to both" in v.message for v in invariants.single_owner(events))


def test_i1_catches_grant_order_and_time_disagreeing() -> None:
    # p2's token 5 opens after p1's token 6 closed: Redis granted them the other way
    # round (what a Redis restart that reset its counters did before tokens were seeded).
    (v,) = invariants.single_owner(handoff(1.0, 2.0, token_b=0))
    assert "grant order and time disagree" in v.message


def test_i1_compares_on_the_clock_it_is_given() -> None:
    events = handoff(1.0, 1.1)
    for e in events:  # another host's monotonic clock, but wall clocks agree
        if e["replica"] == "p2":
            e["t"] -= 100.0
    assert invariants.single_owner(events, clock="wall") == []
    assert invariants.single_owner(events) != []


def test_i1_an_unclosed_session_ends_at_its_replicas_kill() -> None:
    events = [ev(0.0, "open", "p1", 1), ev(1.2, "open", "p2", 2)]
    assert invariants.single_owner(events) != []  # without the mark: p1 holds it forever
    kill = [{"t": 1.0, "event": "kill-done", "target": "p1"}]
    assert invariants.single_owner(events, kill) == []
    late_kill = [{"t": 1.5, "event": "kill-done", "target": "p1"}]
    assert invariants.single_owner(events, late_kill) != []


def test_i1_an_unclosed_session_ends_when_its_replica_is_replaced() -> None:
    events = [
        ev(0.0, "open", "p1", 1, pid=100),
        ev(1.1, "open", "p1", 3, agent="a2", pid=200),  # p1 again, a new process
        ev(1.5, "open", "p2", 2),
    ]
    assert invariants.single_owner(events) == []
    sessions = {s.session: s for s in invariants.sessions(events)}
    assert sessions["p1-1-100"].ended_by == "replaced" and sessions["p1-1-100"].end == 1.1


def test_i1_a_paused_replica_holds_nothing_if_it_lets_go_on_waking() -> None:
    events = [ev(0.0, "open", "p1", 1), ev(2.0, "open", "p2", 2), ev(9.2, "close", "p1", 1)]
    pause = [
        {"t": 1.0, "event": "pause-done", "target": "p1"},
        {"t": 9.0, "event": "resume", "target": "p1"},
    ]
    assert invariants.single_owner(events, pause) == []
    assert invariants.single_owner(events) != []  # without the marks it is an overlap
    slow = [dict(e, t=10.5) if e["ev"] == "close" else e for e in events]
    assert invariants.single_owner(slow, pause) != []  # kept serving after it woke


def test_i1_one_replica_twice_for_one_agent_is_not_a_violation() -> None:
    events = [ev(0.0, "open", "p1", 1), ev(0.5, "open", "p1", 2), ev(1.0, "close", "p1", 1)]
    assert invariants.single_owner(events) == []


# ----------------------------------------------------------------------------- I2
def op(
    t: float, rev: str, *, ok: bool | None = True, kind: str = "apply", mode: str = "managed"
) -> dict[str, Any]:
    return {
        "t": t,
        "agent": "e1",
        "mode": mode,
        "op": kind,
        "name": "chaos-0",
        "rev": rev,
        "ok": ok,
    }


def snap(hub: str | None, local: str | None, *, versions: tuple[int, int] = (5, 5)) -> dict:
    def side(rev: str | None, version: int) -> dict:
        return {} if rev is None else {"chaos-0": {"rev": rev, "version": version}}

    return {
        "e1": {"mode": "managed", "hub": side(hub, versions[0]), "local": side(local, versions[1])}
    }


def test_i2_the_last_acknowledged_change_everywhere_passes() -> None:
    log = [op(1, "w1"), op(2, "w2")]
    assert invariants.nothing_lost(log, snap("w2", "w2")) == []


def test_i2_catches_a_change_the_agent_never_got() -> None:
    (v,) = invariants.nothing_lost([op(1, "w1"), op(2, "w2")], snap("w2", "w1"))
    assert v.invariant == "I2" and "local holds w1 but hub holds w2" in v.message


def test_i2_catches_an_acknowledged_change_the_hub_lost() -> None:
    violations = invariants.nothing_lost([op(1, "w1"), op(2, "w2")], snap("w1", "w1"))
    assert any("hub holds w1 after 2 acknowledged changes" in v.message for v in violations)


def test_i2_an_unknown_outcome_may_go_either_way() -> None:
    log = [op(1, "w1"), op(2, "w2", ok=None)]
    assert invariants.nothing_lost(log, snap("w1", "w1")) == []
    assert invariants.nothing_lost(log, snap("w2", "w2")) == []
    assert invariants.nothing_lost(log, snap("w0", "w0")) != []


def test_i2_a_refused_change_must_not_land() -> None:
    log = [op(1, "w1"), op(2, "w2", ok=False)]
    assert invariants.nothing_lost(log, snap("w2", "w2")) != []


def test_i2_deletes_count_too() -> None:
    log = [op(1, "w1"), op(2, "", kind="delete")]
    assert invariants.nothing_lost(log, snap(None, None)) == []
    (v,) = invariants.nothing_lost(log, snap(None, "w1"))
    assert "local holds w1 but hub holds nothing" in v.message


def test_i2_catches_an_older_version_applied_over_a_newer_one() -> None:
    (v,) = invariants.nothing_lost([op(1, "w1")], snap("w1", "w1", versions=(9, 4)))
    assert "older change was applied over a newer one" in v.message


def test_i2_autonomous_agents_are_the_producers() -> None:
    log = [op(1, "w1", mode="autonomous")]
    state = snap("w0", "w1")
    state["e1"]["mode"] = "autonomous"
    (v,) = invariants.nothing_lost(log, state)
    assert "hub holds w0 but local holds w1" in v.message


# ----------------------------------------------------------------------------- I3
def sample(t: float, *, open_: tuple[int, ...], epochs: tuple[int, ...], standin: int = 0) -> dict:
    replicas = {
        f"p{i}": {"open": n, "standin": standin if i == 1 else 0, "epoch": e}
        for i, (n, e) in enumerate(zip(open_, epochs, strict=True), start=1)
    }
    return {"t": t, "replicas": replicas}


def test_i3_measures_from_the_heal_to_whole_for_good() -> None:
    samples = [
        sample(10.0, open_=(2, 1), epochs=(3, 3)),
        sample(11.0, open_=(2, 2), epochs=(3, 3)),  # whole, but then not again
        sample(12.0, open_=(2, 2), epochs=(3, 4)),
        sample(13.5, open_=(2, 2), epochs=(4, 4)),
        sample(14.0, open_=(2, 2), epochs=(4, 4)),
    ]
    took, violations = invariants.converged(samples, heal_t=10.0, agents=4)
    assert took == pytest.approx(3.5) and violations == []


def test_i3_catches_slow_and_missing_convergence() -> None:
    slow = [sample(0.0, open_=(1, 1), epochs=(2, 2)), sample(12.0, open_=(2, 2), epochs=(2, 2))]
    took, (v,) = invariants.converged(slow, heal_t=0.0, agents=4)
    assert took == 12.0 and "bound 10.0 s" in v.message
    stand_ins = [sample(0.0, open_=(2, 2), epochs=(2, 2), standin=1)]
    took, (v,) = invariants.converged(stand_ins, heal_t=0.0, agents=4)
    assert took is None and "never converged" in v.message


def test_i3_a_silent_replica_does_not_count() -> None:
    s = sample(0.0, open_=(4,), epochs=(2,))
    s["replicas"]["p2"] = None
    assert invariants.convergence_time([s], after=0.0, agents=4) == 0.0


# ----------------------------------------------------------------------------- I4
def leader(holder: str, token: int, renew: str = "2026-01-01T00:00:10Z") -> dict:
    return {
        "holderIdentity": holder,
        "leaseTransitions": token,
        "renewTime": renew,
        "leaseDurationSeconds": 4,
    }


def shard_map(epoch: int, by: str, token: int, at: str = "2026-01-01T00:00:11Z") -> dict:
    return {"epoch": epoch, "publishedBy": by, "fencingToken": token, "publishedAt": at}


LEADERS = [(5, leader("p1", 0)), (20, leader("p2", 1)), (30, leader("p2", 1))]


def test_i4_maps_from_the_leader_of_their_revision_pass() -> None:
    maps = [(6, shard_map(1, "p1", 0)), (21, shard_map(2, "p2", 1)), (31, shard_map(3, "p2", 1))]
    assert invariants.fenced_leadership(maps, LEADERS) == []


def test_i4_catches_a_stale_leaders_write() -> None:
    maps = [(6, shard_map(1, "p1", 0)), (21, shard_map(2, "p1", 0))]  # p1 after p2 took over
    (v,) = invariants.fenced_leadership(maps, LEADERS)
    assert v.invariant == "I4" and "while p2 led under token 1" in v.message


def test_i4_catches_an_epoch_that_did_not_grow() -> None:
    maps = [(21, shard_map(2, "p2", 1)), (31, shard_map(2, "p2", 1))]
    (v,) = invariants.fenced_leadership(maps, LEADERS)
    assert "epoch did not increase" in v.message


def test_i4_catches_a_write_after_the_lease_ran_out() -> None:
    maps = [(21, shard_map(2, "p2", 1, at="2026-01-01T00:00:15Z"))]  # renewed at :10, 4 s lease
    (v,) = invariants.fenced_leadership(maps, LEADERS)
    assert "after p2's lease ran out" in v.message


def test_i4_catches_a_write_without_any_leader() -> None:
    (v,) = invariants.fenced_leadership([(3, shard_map(1, "p1", 0))], LEADERS)
    assert "nobody held the leader record" in v.message


def test_violations_read_as_one_line() -> None:
    v = invariants.Violation("I1", "edge-01", "p1 and p2 both held it")
    assert str(v) == "I1 edge-01: p1 and p2 both held it" and "\n" not in str(v)
    assert v.to_json()["invariant"] == "I1" and math.isfinite(invariants.PAUSE_GRACE)
