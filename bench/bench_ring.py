"""Ring benchmark: balance, churn and lookup cost of `election._ring` beside its peers.

Run: `python bench/bench_ring.py`. Prints a table; it is not a test.

Schemes, all measured in this run on the same names (`agent-00000`..., `principal-0`...):
  mooring   rendezvous hashing with a load bound (stable matching), epsilon 0.25
  chbl      consistent hashing with bounded loads, 160 vnodes, agents placed in ring order,
            epsilon 0.25 (reference implementation below; the alternative DESIGN.md names)
  uhashring ketama consistent hashing (`uhashring.HashRing(hash_fn="ketama")`), no bound
  modulo    blake2b(agent) mod n

Columns:
  max/mean  the most-loaded replica's agents over the mean, with n replicas
  out       fraction of agents that change owner on n -> n+1
  x1/(n+1)  `out` over the minimum 1/(n+1)
  loss      fraction of agents that change owner when one replica is lost, averaged over
            losing each replica in turn
  ovf       the most agents that moved though they were NOT on the lost replica (overflow)
  build     ms to build the assignment or ring for all agents
  lookup    us per owner() call after the build (mooring: `Ring.owner`)
  targets   load: max/mean <= 1.25; out: x1/(n+1) <= 1.1; loss: agents moved on a loss
            <= 1.1 x the lost replica's agents (only its agents, plus bounded overflow)

At 1,000 agents the churn of every hashing scheme is binomial: `x1/(n+1)` has an sd of
about 0.1 across name sets at n = 10, so a single row there passes or fails by luck as
much as by design; the 10,000-agent rows are the discriminating ones.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from uhashring import HashRing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from election import _ring as ring

EPSILON = 0.25
SIZES = ((3, 1_000), (5, 1_000), (10, 1_000), (3, 10_000), (5, 10_000), (10, 10_000))
LOOKUPS = 20_000

Owners = dict[str, str]
Lookup = Callable[[str], str]
Builder = Callable[[Sequence[str], Sequence[str]], tuple[Owners, Lookup]]


def _h64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


def build_mooring(agents: Sequence[str], replicas: Sequence[str]) -> tuple[Owners, Lookup]:
    built = ring.Ring(agents, replicas, epsilon=EPSILON)
    return dict(built.assignment()), built.owner


def build_chbl(agents: Sequence[str], replicas: Sequence[str]) -> tuple[Owners, Lookup]:
    """Mirrokni-Thorup-Zadimoghaddam: first non-full bin clockwise, agents in ring order."""
    cap = math.ceil((1 + EPSILON) * len(agents) / len(replicas))
    points = sorted((_h64(f"{r}#{v}"), r) for r in replicas for v in range(160))
    hashes = [p for p, _ in points]
    load = dict.fromkeys(replicas, 0)
    owners: Owners = {}
    for h, agent in sorted((_h64(a), a) for a in agents):
        i = bisect.bisect_left(hashes, h) % len(points)
        while load[points[i][1]] >= cap:
            i = (i + 1) % len(points)
        owners[agent] = points[i][1]
        load[points[i][1]] += 1
    return owners, owners.__getitem__


def build_uhashring(agents: Sequence[str], replicas: Sequence[str]) -> tuple[Owners, Lookup]:
    hr = HashRing(nodes=list(replicas), hash_fn="ketama")
    return {a: hr.get_node(a) for a in agents}, hr.get_node


def build_modulo(agents: Sequence[str], replicas: Sequence[str]) -> tuple[Owners, Lookup]:
    ordered = sorted(replicas)

    def lookup(agent: str) -> str:
        return ordered[_h64(agent) % len(ordered)]

    return {a: lookup(a) for a in agents}, lookup


SCHEMES: dict[str, Builder] = {
    "mooring": build_mooring,
    "chbl": build_chbl,
    "uhashring": build_uhashring,
    "modulo": build_modulo,
}


def _moved(before: Owners, after: Owners) -> int:
    return sum(before[a] != after[a] for a in before)


def measure(build: Builder, n: int, m: int) -> dict[str, float]:
    agents = [f"agent-{i:05d}" for i in range(m)]
    replicas = [f"principal-{i}" for i in range(n + 1)]

    started = time.perf_counter()
    base, lookup = build(agents, replicas[:n])
    build_ms = (time.perf_counter() - started) * 1e3

    probe = [agents[(i * 7919) % m] for i in range(LOOKUPS)]
    started = time.perf_counter()
    for agent in probe:
        lookup(agent)
    lookup_us = (time.perf_counter() - started) / LOOKUPS * 1e6

    loads = Counter(base.values())
    grown, _ = build(agents, replicas)
    out = _moved(base, grown) / m

    loss_fractions: list[float] = []
    overflow = 0
    loss_ok = True
    for lost in replicas[:n]:
        after, _ = build(agents, [r for r in replicas[:n] if r != lost])
        moved = _moved(base, after)
        extra = sum(base[a] != after[a] for a in agents if base[a] != lost)
        loss_fractions.append(moved / m)
        overflow = max(overflow, extra)
        loss_ok = loss_ok and moved <= 1.1 * loads[lost]
    return {
        "max_mean": max(loads.values()) / (m / n),
        "out": out,
        "out_ratio": out * (n + 1),
        "loss": statistics.mean(loss_fractions),
        "overflow": overflow,
        "loss_ok": float(loss_ok),
        "build_ms": build_ms,
        "lookup_us": lookup_us,
    }


def main() -> None:
    started = time.perf_counter()
    header = (
        f"{'n->n+1':>7} {'agents':>6}  {'scheme':<9} {'max/mean':>8} {'out':>7} {'x1/(n+1)':>8}"
        f" {'loss':>7} {'ovf':>5} {'build':>9} {'lookup':>9}  targets load/out/loss"
    )
    print(header)
    print("-" * len(header))
    for n, m in SIZES:
        for name, build in SCHEMES.items():
            r = measure(build, n, m)
            verdict = "/".join(
                "pass" if ok else "FAIL"
                for ok in (r["max_mean"] <= 1.25, r["out_ratio"] <= 1.1, bool(r["loss_ok"]))
            )
            print(
                f"{f'{n}->{n + 1}':>7} {m:>6}  {name:<9} {r['max_mean']:>8.3f} {r['out']:>7.4f}"
                f" {r['out_ratio']:>8.3f} {r['loss']:>7.4f} {int(r['overflow']):>5}"
                f" {r['build_ms']:>6.1f} ms {r['lookup_us']:>6.2f} us  {verdict}"
            )
        print()
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
