"""The ring: total, deterministic, balanced within its bound, and minimal in what it moves."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from election import _ring as ring

pytestmark = pytest.mark.unit

names = st.text(min_size=1, max_size=12)
agent_sets = st.lists(names, max_size=60, unique=True)
replica_sets = st.lists(names, min_size=1, max_size=8, unique=True)
epsilons = st.floats(min_value=0.0, max_value=2.0)
salts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


def loads(owners: dict[ring.AgentName, ring.ReplicaId]) -> Counter[ring.ReplicaId]:
    return Counter(owners.values())


def moved(
    before: dict[ring.AgentName, ring.ReplicaId], after: dict[ring.AgentName, ring.ReplicaId]
) -> set[str]:
    return {a for a in before if before[a] != after[a]}


def unbounded(agents: list[str], replicas: list[str]) -> dict[ring.AgentName, ring.ReplicaId]:
    """Plain rendezvous hashing: a slack so large that no replica is ever full."""
    return ring.assign(agents, replicas, epsilon=float(len(replicas)))


# -- determinism and shape ------------------------------------------------------------


@given(agents=agent_sets, replicas=replica_sets, epsilon=epsilons, data=st.data())
def test_result_depends_only_on_the_two_sets(
    agents: list[str], replicas: list[str], epsilon: float, data: st.DataObject
) -> None:
    shuffled_agents = data.draw(st.permutations(agents)) + agents[: len(agents) // 2]
    shuffled_replicas = data.draw(st.permutations(replicas)) + replicas[:1]
    first = ring.assign(agents, replicas, epsilon=epsilon)
    again = ring.assign(iter(shuffled_agents), tuple(shuffled_replicas), epsilon=epsilon)
    assert again == first


@given(agents=agent_sets, replicas=replica_sets, epsilon=epsilons)
def test_every_agent_gets_one_of_the_given_replicas(
    agents: list[str], replicas: list[str], epsilon: float
) -> None:
    owners = ring.assign(agents, replicas, epsilon=epsilon)
    assert set(owners) == set(agents)
    assert set(owners.values()) <= set(replicas)


@given(agents=agent_sets, replicas=replica_sets, epsilon=epsilons)
def test_no_replica_exceeds_the_capacity(
    agents: list[str], replicas: list[str], epsilon: float
) -> None:
    built = ring.Ring(agents, replicas, epsilon=epsilon)
    cap = math.ceil((1 + epsilon) * len(agents) / len(replicas))
    assert built.capacity == cap
    assert max(built.loads().values()) <= cap
    assert sum(built.loads().values()) == len(agents)


@given(agents=st.lists(names, min_size=1, max_size=40, unique=True), replicas=replica_sets)
def test_owner_and_ring_agree_with_assign(agents: list[str], replicas: list[str]) -> None:
    owners = ring.assign(agents, replicas)
    built = ring.Ring(agents, replicas)
    for agent in agents[:5]:
        assert ring.owner(agent, agents=agents, replicas=replicas) == owners[ring.AgentName(agent)]
    assert {a: built.owner(a) for a in agents} == owners
    assert dict(built.assignment()) == owners


def test_assignment_is_pinned_across_processes_and_versions() -> None:
    # Replicas running different builds must agree: a change here reassigns every agent.
    owners = ring.assign(
        [f"agent-{i}" for i in range(8)], ["principal-a", "principal-b", "principal-c"]
    )
    assert owners == {
        "agent-0": "principal-c",
        "agent-1": "principal-c",
        "agent-2": "principal-b",
        "agent-3": "principal-b",
        "agent-4": "principal-b",
        "agent-5": "principal-c",
        "agent-6": "principal-a",
        "agent-7": "principal-c",
    }


# -- minimal movement -------------------------------------------------------------------


@given(agents=agent_sets, replicas=st.lists(names, min_size=2, max_size=8, unique=True))
def test_without_a_full_replica_only_the_minimum_moves(
    agents: list[str], replicas: list[str]
) -> None:
    *old, new = replicas
    before, after = unbounded(agents, old), unbounded(agents, replicas)
    assert all(after[a] == new for a in moved(before, after))  # scale-out: only to the newcomer
    lost = replicas[0]
    shrunk = unbounded(agents, replicas[1:])
    assert moved(after, shrunk) == {a for a in agents if after[ring.AgentName(a)] == lost}


@given(agents=agent_sets, replicas=replica_sets, epsilon=epsilons)
def test_the_bound_changes_nothing_while_no_replica_is_over_it(
    agents: list[str], replicas: list[str], epsilon: float
) -> None:
    free = unbounded(agents, replicas)
    cap = math.ceil((1 + epsilon) * len(agents) / len(replicas))
    assume(max(loads(free).values(), default=0) <= cap)
    assert ring.assign(agents, replicas, epsilon=epsilon) == free


@pytest.mark.parametrize("n", [3, 5, 10])
@settings(max_examples=12, deadline=None)
@given(salt=salts)
def test_scale_out_and_loss_move_little_on_random_names(n: int, salt: str) -> None:
    m = 1000
    agents = [f"{salt}/agent-{i}" for i in range(m)]
    replicas = [f"{salt}/principal-{i}" for i in range(n + 1)]
    before = ring.assign(agents, replicas[:n])
    after = ring.assign(agents, replicas)

    out = moved(before, after)
    p = 1 / (n + 1)  # each agent's chance to prefer the newcomer: moves are binomial
    assert len(out) <= m * p + 5 * math.sqrt(m * p * (1 - p))
    assert len({a for a in out if after[a] != replicas[n]}) <= 0.02 * m  # overflow

    lost = replicas[0]
    shrunk = ring.assign(agents, replicas[1:n])
    overflow = {a for a in moved(before, shrunk) if before[a] != lost}
    assert all(shrunk[a] != lost for a in agents)
    assert len(overflow) <= 0.02 * m
    assert max(loads(before).values()) <= math.ceil(1.25 * m / n)


@pytest.mark.parametrize("m", [1_000, 10_000])
@pytest.mark.parametrize("n", [3, 5, 10])
def test_targets_hold_on_the_benchmark_sizes(n: int, m: int) -> None:
    # The DESIGN.md targets, exactly, on the benchmark's fixed names. At 1,000 agents the
    # scale-out churn is binomial noise (sd ~0.1 of the target ratio), so random names
    # get the 5-sigma allowance above instead.
    agents = [f"agent-{i:05d}" for i in range(m)]
    replicas = [f"principal-{i}" for i in range(n + 1)]
    before = ring.assign(agents, replicas[:n])
    counts = loads(before)
    assert max(counts.values()) <= 1.25 * m / n
    assert len(moved(before, ring.assign(agents, replicas))) <= 1.1 * m / (n + 1)
    lost = replicas[n // 2]
    shrunk = ring.assign(agents, [r for r in replicas[:n] if r != lost])
    assert len(moved(before, shrunk)) <= 1.1 * counts[ring.ReplicaId(lost)]


# -- inputs ---------------------------------------------------------------------------------


def test_no_replicas_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        ring.assign(["agent-1"], [])
    with pytest.raises(ValueError, match="at least one replica"):
        ring.owner("agent-1", agents=["agent-1"], replicas=iter(()))


def test_no_agents_is_an_empty_assignment() -> None:
    assert ring.assign([], ["principal-0"]) == {}


@pytest.mark.parametrize("epsilon", [-0.1, math.nan, math.inf])
def test_epsilon_must_be_finite_and_not_negative(epsilon: float) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        ring.assign(["agent-1"], ["principal-0"], epsilon=epsilon)


def test_a_bare_string_is_not_a_list_of_names() -> None:
    with pytest.raises(TypeError, match="not one str"):
        ring.assign(["agent-1"], "principal-0")


def test_an_unregistered_agent_has_no_owner() -> None:
    built = ring.Ring(["agent-1"], ["principal-0"])
    assert "agent-1" in built and "agent-2" not in built
    with pytest.raises(KeyError, match="agent-2"):
        built.owner("agent-2")
