"""The ring: which replica owns which agent, as a pure function of the two name sets.

Every replica computes the same answer from the shard map's replica list and the
registered-agent list; nothing here does I/O, reads a clock or uses Python's
randomised `hash()`.

Algorithm: rendezvous (highest-random-weight) hashing with a load bound. Each
(agent, replica) pair gets a 64-bit score from keyed BLAKE2b. Every replica has room
for `capacity = ceil((1 + epsilon) * m / n)` agents (m agents, n replicas). Agents
rank replicas by score, replicas rank agents by the same score, and the assignment
is the agent-proposing stable matching under those capacities (Gale-Shapley with
quotas): an agent goes to its top replica unless that replica is full of agents
that score it higher, in which case the agent with the weakest claim overflows to
its next choice. The stable matching is unique, so the result does not depend on the
order in which agents are placed or the inputs are given.

Why this and not consistent hashing with bounded loads (CHBL: virtual nodes on a
circle, first non-full bin clockwise; Mirrokni, Thorup, Zadimoghaddam). "ratio" is
the fraction of agents moved on n -> n+1 times (n + 1), 1.0 being the minimum in
expectation; "overflow" counts agents that moved on a replica's loss although they
were not on it. Random name sets, epsilon 0.25, n = 10:

    agents  scheme                             runs  ratio mean   sd   max   overflow max
    10,000  rendezvous, stable matching (this)   30     1.010   0.027  1.057      0
    10,000  rendezvous, greedy in hash order     30     0.998   0.033  1.080      0
    10,000  CHBL, 1000 vnodes, ring order        30     0.996   0.048  1.097      0
    10,000  CHBL,  160 vnodes, ring order        30     1.009   0.087  1.214      6
     1,000  rendezvous, stable matching (this)  200     1.021   0.109  1.254      7
     1,000  CHBL,  160 vnodes, ring order       200     1.010   0.126  1.309     11

Every scheme that hashes agents independently moves a binomial number of them: at
1,000 agents on 10 replicas the ratio's sd is about 0.1 whatever the scheme, so
"~1.1/(n+1)" holds on average there, not for every name set. CHBL adds the noise of
the newcomer's arc length on top (about 1/sqrt(vnodes)); rendezvous adds none, which
is what shows at 10,000 agents, and has no vnode count to tune. On n -> n+1 the
agents that move are exactly those whose new top replica is the newcomer, plus
overflow; on the loss of a replica exactly its agents move, plus overflow. Placement
order (greedy by hash vs stable matching, and for CHBL ring order vs name order)
made no difference beyond that noise; the stable matching is chosen because it has
no order at all, and it overflows the agents with the weakest claim on a full
replica. The price is O(m * n) hashes per build (about 0.1 s for 10,000 agents on
10 replicas) against O(m log(n * vnodes)); a build happens once per shard-map epoch
or agent-list change, and `Ring.owner` is a dict lookup afterwards.

Changing the hash, its personalisation or the tie-breaks reassigns agents across a
rolling upgrade; bump `_HASH_PERSON` deliberately if you must.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import NewType, cast

__all__ = [
    "DEFAULT_EPSILON",
    "AgentName",
    "ReplicaId",
    "Ring",
    "assign",
    "capacity",
    "owner",
]

AgentName = NewType("AgentName", str)
ReplicaId = NewType("ReplicaId", str)

DEFAULT_EPSILON = 0.25
"""Load slack: no replica holds more than ceil((1 + epsilon) * agents / replicas)."""

_HASH_PERSON = b"mooring.ring.v1"  # BLAKE2b personalisation (<= 16 bytes); part of the contract


def capacity(agents: int, replicas: int, *, epsilon: float = DEFAULT_EPSILON) -> int:
    """Most agents any one replica may own: ceil((1 + epsilon) * agents / replicas)."""
    if replicas < 1:
        raise ValueError(f"the ring needs at least one replica, got {replicas}")
    if agents < 0:
        raise ValueError(f"agent count must be >= 0, got {agents}")
    _check_epsilon(epsilon)
    return math.ceil((1.0 + epsilon) * agents / replicas)


class Ring:
    """The assignment for one (agents, replicas) pair, built once; `owner` is O(1).

    Inputs are deduplicated and their order is irrelevant. Build once per shard-map
    epoch and agent-list change, then look up as often as needed.
    """

    __slots__ = ("_capacity", "_epsilon", "_owners", "_replicas")

    def __init__(
        self,
        agents: Iterable[str],
        replicas: Iterable[str],
        *,
        epsilon: float = DEFAULT_EPSILON,
    ) -> None:
        if isinstance(agents, str) or isinstance(replicas, str):
            raise TypeError("agents and replicas must be collections of names, not one str")
        replica_ids = tuple(sorted({ReplicaId(r) for r in replicas}))
        agent_names = sorted({AgentName(a) for a in agents})
        self._capacity = capacity(len(agent_names), len(replica_ids), epsilon=epsilon)
        self._epsilon = epsilon
        self._replicas = replica_ids
        choice = _match(agent_names, replica_ids, capacity=self._capacity)
        # Keyed by plain str so that `owner` is one dict probe (no NewType call).
        self._owners: dict[str, ReplicaId] = {
            name: replica_ids[index] for name, index in zip(agent_names, choice, strict=True)
        }

    @property
    def replicas(self) -> tuple[ReplicaId, ...]:
        """The distinct replica ids, sorted."""
        return self._replicas

    @property
    def capacity(self) -> int:
        """Most agents any one replica owns in this ring."""
        return self._capacity

    @property
    def epsilon(self) -> float:
        return self._epsilon

    def owner(self, agent: str) -> ReplicaId:
        """The replica that owns `agent`; `KeyError` if the agent is not in the ring."""
        try:
            return self._owners[agent]
        except KeyError:
            raise KeyError(f"agent {agent!r} is not registered in this ring") from None

    def assignment(self) -> Mapping[AgentName, ReplicaId]:
        """Read-only view of agent -> owning replica."""
        return cast(Mapping[AgentName, ReplicaId], MappingProxyType(self._owners))

    def loads(self) -> dict[ReplicaId, int]:
        """Agents owned per replica, every replica present (zero included)."""
        counts = dict.fromkeys(self._replicas, 0)
        for replica in self._owners.values():
            counts[replica] += 1
        return counts

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, agent: object) -> bool:
        return agent in self._owners

    def __repr__(self) -> str:
        return (
            f"Ring(agents={len(self._owners)}, replicas={len(self._replicas)},"
            f" epsilon={self._epsilon}, capacity={self._capacity})"
        )


def assign(
    agents: Iterable[str],
    replicas: Iterable[str],
    *,
    epsilon: float = DEFAULT_EPSILON,
) -> dict[AgentName, ReplicaId]:
    """Map every agent to its owning replica (a fresh dict; see `Ring` for lookups)."""
    return dict(Ring(agents, replicas, epsilon=epsilon).assignment())


def owner(
    agent: str,
    *,
    agents: Iterable[str],
    replicas: Iterable[str],
    epsilon: float = DEFAULT_EPSILON,
) -> ReplicaId:
    """The owner of one agent; builds the whole ring (O(m * n)), so build a `Ring` to reuse."""
    return Ring(agents, replicas, epsilon=epsilon).owner(agent)


def _check_epsilon(epsilon: float) -> None:
    if not (math.isfinite(epsilon) and epsilon >= 0.0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")


def _match(agents: list[AgentName], replicas: tuple[ReplicaId, ...], *, capacity: int) -> list[int]:
    """Agent-proposing stable matching with equal quotas; the replica index per agent.

    `agents` and `replicas` are sorted and distinct. Ties (equal 64-bit scores, about
    n**2 / 2**64 likely) go to the smaller replica id for an agent, and to the smaller
    agent name for a replica, so the result is a function of the two sets alone.
    """
    n = len(replicas)
    hashers = [
        hashlib.blake2b(
            digest_size=8,
            key=hashlib.blake2b(_encode(r), digest_size=32, person=_HASH_PERSON).digest(),
            person=_HASH_PERSON,
        )
        for r in replicas
    ]
    scores: list[list[int]] = []
    for name in agents:
        data = _encode(name)
        row = []
        for base in hashers:
            h = base.copy()
            h.update(data)
            row.append(int.from_bytes(h.digest(), "big"))
        scores.append(row)

    tried = [0] * len(agents)  # how many replicas each agent has proposed to
    ranked: dict[int, list[int]] = {}  # full preference order, built only once rejected
    # Per replica a min-heap of (score, -agent): the root is the weakest claim held.
    held: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for first in range(len(agents)):
        agent = first
        while agent >= 0:
            row = scores[agent]
            k = tried[agent]
            tried[agent] = k + 1
            if k == 0:
                choice = max(range(n), key=row.__getitem__)  # first max: smaller id
            else:
                order = ranked.get(agent)
                if order is None:  # stable sort: equal scores keep the smaller id first
                    order = ranked[agent] = sorted(range(n), key=row.__getitem__, reverse=True)
                choice = order[k]
            heap = held[choice]
            heapq.heappush(heap, (row[choice], -agent))
            agent = -heapq.heappop(heap)[1] if len(heap) > capacity else -1
    # n * capacity >= len(agents), so every agent ends up held by exactly one replica.
    owners = [0] * len(agents)
    for index, heap in enumerate(held):
        for _, neg_agent in heap:
            owners[-neg_agent] = index
    return owners


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")
