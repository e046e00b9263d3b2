"""Failover benchmark: how long the agents of a SIGKILLed replica take to resync elsewhere.

Run: `python bench/bench_failover.py [--trials 5] [--fleets 4]` (about 4-5 minutes on 2
cores). Prints a table; it is not a test.

Setup, all real and on loopback, in one temp dir removed at the end: `mooring up --detach
--replicas 3 --agents 1000 --fleets 4` (in-process `mooring._launcher.up`): one real etcd
member, one Redis, 3 `mooring principal serve` processes, 4 `mooring fleet run` processes
hosting 250 in-process `agent.Agent`s each (every 4th agent autonomous, the rest managed;
`--fleets 1` puts all 1,000 in one process, the pessimistic bound). `up` gives every
agent one Application; this bench adds a second (managed: in the principal store;
autonomous: in the agent's local store), so each reconnect's resync compares a real
inventory.

Trials, each starting from a converged cluster (every agent connected to its owner under
the published shard map, as `mooring status --json` shows it):
  1. snapshot which agents are connected to the victim (the fleet's status file);
  2. SIGKILL the victim: a non-leader replica (rotating over the non-leaders), or the
     leader (so the failover includes the re-election);
  3. scrape every surviving replica's /metrics at 20 Hz (the welcome counter,
     `mooring_events_sent_total{type="welcome"}` = new handshakes) until every agent is
     connected to its owner again under the new map;
  4. per affected agent, from its `Agent.failovers` records (monotonic clock, the same
     on one host): failover = first session loss after the kill -> resynced on its last
     session of the storm (the new owner; a stand-in hop in between is included);
     kill -> resynced adds the time the agent took to notice the loss;
  5. restart the victim (`mooring scale --replicas 3`) and wait until every agent is back
     on its owner before the next trial.

Targets (printed beside each figure, with the ratio figure / target): non-leader p99 <= 2 s
and max <= 5 s; leader max <= lease_duration + 3 s, with lease_duration read from the
flags in force that the launcher records for each replica in cluster.json.
Peak handshake rate: the largest increase of one surviving replica's welcome counter over
any 1 s window of the storm.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import functools
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import _cluster as cluster  # noqa: E402  (bench/, this script's folder)

from mooring import _launcher as launcher  # noqa: E402
from mooring import _state as state_  # noqa: E402
from mooring import _status as status_  # noqa: E402
from proto import exposition  # noqa: E402

EVENTS_SENT = "mooring_events_sent_total"  # its type="welcome" series counts welcomes
SCRAPE_TIMEOUT = 0.5
FLEETS = 4
"""Fleet processes hosting the agents by default. Real agents run one per cluster, each
on its own CPU; one process for all 1,000 serializes their work on one core (the
`--fleets 1` run shows that bound), 4 let the agent side use both cores here."""
SAMPLE_HZ = 20.0
STORM_TIMEOUT = 40.0
"""Seconds a storm may take before the trial is recorded as incomplete."""
SETTLE_TIMEOUT = 90.0
"""Seconds for the cluster to converge after start or after a restart."""
NONLEADER_P99 = 2.0
NONLEADER_MAX = 5.0
LEADER_EXTRA = 3.0
"""Leader target: max <= lease_duration + LEADER_EXTRA seconds."""


# ----------------------------------------------------------------------------- cluster
def now() -> float:
    return time.monotonic()


def fleet_status(directory: Path) -> dict[str, dict[str, Any]]:
    got = status_.fleet_agents(state_.load(directory))
    if not got:
        raise RuntimeError("the fleet's status file is missing or stale")
    return got


def lease_duration(record: state_.ReplicaRecord) -> float:
    """The replica's lease duration as it runs: the flags in force, which the launcher
    records in cluster.json (replicas[].settings)."""
    return float(record.settings["lease_duration"])


def seed_second_app(state: state_.ClusterState) -> None:
    managed = [a.name for a in state.agents if a.mode == "managed"]
    asyncio.run(launcher.seed_managed(state.coordination, managed, apps=("bench-second",)))
    for record in state.agents:
        if record.mode == "autonomous":
            launcher.seed_autonomous(Path(record.state), app="local-second")


# ----------------------------------------------------------------------------- sampling
def scrape_welcomes(address: str) -> float | None:
    """The replica's welcome counter (None: no answer, or no welcome yet)."""
    samples = exposition.scrape(address, timeout=SCRAPE_TIMEOUT)
    return None if samples is None else samples.value(EVENTS_SENT, type="welcome")


class Sampler(threading.Thread):
    """Scrapes each address's welcome counter at SAMPLE_HZ until stopped."""

    def __init__(self, addresses: dict[str, str]) -> None:
        super().__init__(name="welcome-sampler", daemon=True)
        self.addresses = addresses
        self.samples: dict[str, list[tuple[float, float]]] = {r: [] for r in addresses}
        self.halt = threading.Event()

    def run(self) -> None:
        period = 1.0 / SAMPLE_HZ
        while not self.halt.is_set():
            tick = now()
            for replica, address in self.addresses.items():
                value = scrape_welcomes(address)
                if value is not None:
                    self.samples[replica].append((now(), value))
            self.halt.wait(max(0.0, period - (now() - tick)))

    def peak_per_second(self, replica: str) -> tuple[float, float, float]:
        """(max welcomes over any 1 s window, total welcomes, achieved sample rate Hz)."""
        samples = self.samples[replica]
        if len(samples) < 2:
            return float("nan"), float("nan"), 0.0
        times = [t for t, _ in samples]
        peak = 0.0
        for t, value in samples:
            i = bisect.bisect_right(times, t - 1.0) - 1
            base = samples[max(i, 0)][1]
            peak = max(peak, value - base)
        span = times[-1] - times[0]
        return peak, samples[-1][1] - samples[0][1], (len(samples) - 1) / span if span else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def storm_processes(directory: Path, survivors: Sequence[str]) -> dict[str, int]:
    """name -> pid of every process that works during a storm: fleet, survivors, stores."""
    state = state_.load(directory)
    out = {r.id: r.process.pid for r in state.replicas if r.id in survivors and r.process}
    for i, record in enumerate(state.fleets, start=1):
        if record.process is not None:
            out["fleet" if len(state.fleets) == 1 else f"fleet{i}"] = record.process.pid
    if state.redis_server is not None and state.redis_server.process is not None:
        out["redis"] = state.redis_server.process.pid
    for member in state.etcd:
        if member.process is not None:
            out[member.name] = member.process.pid
    return out


# ----------------------------------------------------------------------------- trials
@dataclasses.dataclass
class Trial:
    kind: str  # non-leader | leader
    index: int  # 1.. within its kind
    victim: str
    affected: int
    failover: list[float]  # per affected agent: first loss -> resynced on the new owner
    from_kill: list[float]  # per affected agent: kill -> resynced
    hops: int  # affected agents that needed more than one session to get home
    missing: int  # affected agents without a resynced session after the kill
    collateral: int  # agents not on the victim that also lost their session
    storm: float  # kill -> every agent on its owner (status polled every second)
    recover: float  # restart -> every agent back on its owner
    peaks: dict[str, tuple[float, float, float]]
    new_leader: str | None
    cpu: dict[str, float]  # process -> CPU seconds used from the kill to convergence


def run_trial(directory: Path, *, kind: str, index: int) -> Trial:
    before = cluster.collect(directory)
    leader = before["leader"]
    if leader is None:
        raise RuntimeError("no leader before the trial")
    live = [r for r in before["replicas"] if r["live"]]
    if kind == "leader":
        victim = next(r for r in live if r["id"] == leader)
    else:
        others = sorted((r for r in live if r["id"] != leader), key=lambda r: r["id"])
        victim = others[index % len(others)]
    survivors = {r["id"]: r["metrics_endpoint"] for r in live if r["id"] != victim["id"]}
    placed = fleet_status(directory)
    on_victim = {n for n, a in placed.items() if a.get("replica_id") == victim["id"]}

    sampler = Sampler(survivors)
    sampler.start()
    time.sleep(0.3)  # a baseline before the kill
    working = storm_processes(directory, list(survivors))
    cpu_before = {name: cpu_seconds(pid) for name, pid in working.items()}
    killed_at = now()
    os.kill(int(victim["pid"]), signal.SIGKILL)
    try:
        # The fleet's status file is up to a second old: right after the kill it still
        # shows the victim's agents on their (old) owner; `dead` rules that state out.
        after, _ = cluster.wait_converged(
            directory, replicas=len(live) - 1, timeout=STORM_TIMEOUT, dead=victim["id"]
        )
        storm = now() - killed_at
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in working.items()}
    finally:
        time.sleep(0.3)
        sampler.halt.set()
        sampler.join()
    placed = fleet_status(directory)  # written after the convergence `after` saw
    failover, from_kill = [], []
    hops = missing = collateral = 0
    for name, info in placed.items():
        records = [(lost, took) for lost, took in info.get("failovers", []) if lost >= killed_at]
        if name not in on_victim:
            collateral += bool(records)
            continue
        if not records:
            missing += 1
            continue
        done = max(lost + took for lost, took in records)
        failover.append(done - records[0][0])
        from_kill.append(done - killed_at)
        hops += len(records) > 1

    restarted = now()
    launcher.scale(directory, len(live), out=io.StringIO())
    _, recover = cluster.wait_converged(directory, replicas=len(live), timeout=SETTLE_TIMEOUT)
    recover = now() - restarted
    return Trial(
        kind=kind,
        index=index + 1,
        victim=victim["id"],
        affected=len(on_victim),
        failover=failover,
        from_kill=from_kill,
        hops=hops,
        missing=missing,
        collateral=collateral,
        storm=storm,
        recover=recover,
        peaks={r: sampler.peak_per_second(r) for r in survivors},
        new_leader=after["leader"],
        cpu=cpu,
    )


# ----------------------------------------------------------------------------- report
def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def verdict(value: float, limit: float) -> str:
    return f"{value:6.2f} s  <= {limit:4.1f} s  {value / limit:5.2f}x  {'ok' if value <= limit else 'MISSED'}"


def report(
    trials: list[Trial], *, agents: int, managed: int, fleets: int, lease: float, ttl: str
) -> None:
    print(
        f"Mooring failover: 3 replicas, {agents} agents ({managed} managed, {agents - managed} "
        f"autonomous; 2 Applications each) in {fleets} fleet process(es); real etcd + Redis, "
        f"mTLS; {os.cpu_count()} CPUs shared by every process"
    )
    print(
        f"replicas' lease_duration {lease:g} s (cluster.json: the flags in force), session TTL {ttl}"
    )
    print()
    head = (
        f"{'trial':<13}{'victim':>7}{'leader->':>9}{'agents':>7}{'p50 s':>7}{'p99 s':>7}"
        f"{'max s':>7}{'kill->max':>10}{'hops':>5}{'miss':>5}{'other':>6}{'storm s':>8}"
        f"{'back s':>7}  peak welcomes/s per survivor (total)"
    )
    print(head)
    print("-" * len(head))
    for t in trials:
        peaks = "  ".join(
            f"{r}={peak:.0f} ({total:.0f}, {hz:.0f} Hz)" for r, (peak, total, hz) in t.peaks.items()
        )
        print(
            f"{t.kind + ' ' + str(t.index):<13}"
            f"{t.victim:>7}{t.new_leader or '-':>9}{t.affected:>7}"
            f"{percentile(t.failover, 0.5):>7.2f}{percentile(t.failover, 0.99):>7.2f}"
            f"{max(t.failover, default=float('nan')):>7.2f}"
            f"{max(t.from_kill, default=float('nan')):>10.2f}{t.hops:>5}{t.missing:>5}"
            f"{t.collateral:>6}{t.storm:>8.2f}{t.recover:>7.2f}  {peaks}"
        )
    print()
    print("CPU seconds used from the kill until every agent was on its owner (the storm):")
    for t in trials:
        used = "  ".join(f"{name}={sec:.2f}" for name, sec in sorted(t.cpu.items()))
        total = sum(t.cpu.values())
        print(
            f"  {t.kind + ' ' + str(t.index):<13} {used}  total {total:.2f} of "
            f"{t.storm * (os.cpu_count() or 1):.2f} available ({os.cpu_count()} CPUs x {t.storm:.2f} s)"
        )
    print()
    print("per kind, over all trials (failover = session loss -> resynced on the new owner):")
    for kind in ("non-leader", "leader"):
        group = [t for t in trials if t.kind == kind]
        if not group:
            continue
        values = [v for t in group for v in t.failover]
        from_kill = [v for t in group for v in t.from_kill]
        missing = sum(t.missing for t in group)
        peak = max((p[0] for t in group for p in t.peaks.values()), default=float("nan"))
        p50, p99, worst = percentile(values, 0.5), percentile(values, 0.99), max(values)
        print(
            f"  {kind}: {len(group)} trials, {len(values)} samples ({missing} missing); "
            f"p50 {p50:.2f} s; kill->resynced p50 {percentile(from_kill, 0.5):.2f} s, "
            f"max {max(from_kill):.2f} s; peak {peak:.0f} new handshakes/s on one replica"
        )
        if kind == "non-leader":
            print(f"    p99  {verdict(p99, NONLEADER_P99)}")
            print(f"    max  {verdict(worst, NONLEADER_MAX)}")
        else:
            print(f"    p99  {p99:6.2f} s")
            print(f"    max  {verdict(worst, lease + LEADER_EXTRA)}  (lease_duration + 3 s)")


# ----------------------------------------------------------------------------- main
def bench(args: argparse.Namespace, directory: Path) -> None:
    started = now()
    launcher.up(
        launcher.UpOptions(
            directory=directory, replicas=3, agents=args.agents, fleets=args.fleets, detach=True
        ),
        out=io.StringIO(),
    )
    state = state_.load(directory)
    _, waited = cluster.wait_converged(directory, replicas=3, timeout=SETTLE_TIMEOUT)
    seed_second_app(state)
    cluster.wait_converged(directory, replicas=3, timeout=SETTLE_TIMEOUT)
    time.sleep(2.0)  # let the second Applications reach every agent
    leases = {lease_duration(r) for r in state.replicas}
    if len(leases) != 1:
        raise RuntimeError(f"replicas disagree on lease_duration: {sorted(leases)}")
    print(
        f"cluster up and converged in {now() - started:.1f}s (agents on owners after "
        f"{waited:.1f}s more)",
        file=sys.stderr,
    )
    trials = []
    for kind in ("non-leader", "leader"):
        for i in range(args.trials):
            trial = run_trial(directory, kind=kind, index=i)
            trials.append(trial)
            print(
                f"  {kind} trial {i + 1}: killed {trial.victim}, {trial.affected} agents, "
                f"max {max(trial.failover, default=float('nan')):.2f}s, "
                f"back in {trial.recover:.1f}s ({now() - started:.0f}s elapsed)",
                file=sys.stderr,
            )
    managed = sum(1 for a in state.agents if a.mode == "managed")
    report(
        trials,
        agents=args.agents,
        managed=managed,
        fleets=len(state.fleets),
        lease=leases.pop(),
        ttl="6 s (default)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=5, help="trials per kind of victim")
    parser.add_argument(
        "--fleets",
        type=int,
        default=FLEETS,
        help=f"fleet processes sharing the agents (default {FLEETS}; 1 = all in one process)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the state dir (logs)")
    args = parser.parse_args()
    bench_ = functools.partial(bench, args)
    return cluster.run(bench_, prefix="mooring-bench-failover-", keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
